//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator replicas
//! only one reconciles.
//!
//! kube-runtime 5.0 ships no elector, and the crates that do pin other kube versions, so this
//! is the small loop client-go's elector runs: create the Lease or renew it while we hold it;
//! take it over once its holder has not renewed for `leaseDurationSeconds` as measured by *our*
//! clock since we last saw the record change (never by comparing `renewTime` with our clock,
//! so clock skew between replicas cannot hand the lease to two of them). Every write carries
//! the `resourceVersion` it read, so two candidates racing for the same record cannot both win.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Who we are in `holderIdentity`: unique per replica.
    pub identity: String,
    /// How long a lease lives without renewal.
    pub duration: Duration,
    /// How often the holder renews, and candidates retry.
    pub retry: Duration,
}

pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The other holder's record as last seen, and when we first saw it so.
    observed: Option<(String, Instant)>,
}

impl Elector {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// One round: creates, renews or takes over the Lease. `Ok(true)` while we hold it.
    /// A write that lost a race (409) is `Ok(false)`: someone else moved first.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let me = self.config.identity.clone();
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(self.duration_seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return won(self.api.create(&PostParams::default(), &lease).await);
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder != me && !holder.is_empty() {
            let record = format!(
                "{holder}|{:?}|{:?}",
                spec.renew_time, spec.lease_transitions
            );
            let expiry = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(self.config.duration, Duration::from_secs);
            match &self.observed {
                Some((seen, since)) if *seen == record => {
                    if since.elapsed() < expiry {
                        return Ok(false);
                    }
                }
                _ => {
                    self.observed = Some((record, Instant::now()));
                    return Ok(false);
                }
            }
        }
        if holder != me {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.holder_identity = Some(me);
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(self.duration_seconds());
        lease.spec = Some(spec);
        let result = won(self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await);
        if matches!(result, Ok(true)) {
            self.observed = None;
        }
        result
    }

    /// Gives the lease up (on shutdown) so a successor need not wait for it to expire.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        lease.spec = Some(spec);
        won(self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await)
        .map(|_| ())
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.config.duration.as_secs()).unwrap_or(i32::MAX)
    }
}

fn won<T>(result: Result<T, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
