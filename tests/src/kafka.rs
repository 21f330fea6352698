//! Kafka helpers: topic creation through rdkafka's admin client (the crate the product uses), and
//! a raw **committed reader** that reads a partition the way Kafka's `read_committed` defines it.
//!
//! # Why a raw reader
//!
//! The test broker, tansu, never fills the aborted-transactions list of a Fetch response. Every
//! `read_committed` client (librdkafka included) relies on that list to drop aborted records, so
//! against tansu they show ABORTED records once those are below the last stable offset. The
//! COMMIT/ABORT control markers themselves are written correctly. [`committed_records`]
//! therefore fetches raw record batches with `read_uncommitted` and applies the markers itself:
//!
//! - a record of a non-transactional batch is visible;
//! - a record of a transactional batch is visible once a COMMIT marker of its producer id follows
//!   it in the log, and dropped when an ABORT marker follows (a fencing `InitProducerId` writes
//!   that ABORT for an abandoned transaction);
//! - a record whose transaction has no marker yet (open) is not visible.
//!
//! This is correct on every broker, so exactly-once tests can use it everywhere.

use anyhow::{Context, anyhow, bail};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, BrokerId, FetchRequest, MetadataRequest, RequestHeader,
    ResponseHeader, TopicName,
    fetch_request::{FetchPartition, FetchTopic},
    metadata_request::MetadataRequestTopic,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Creates `topic` with `partitions` partitions (replication factor 1) and waits until the
/// broker's metadata lists all of its partitions with a leader.
pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("creating the Kafka admin client")?;
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .with_context(|| format!("CreateTopics {topic}"))?;
    for r in results {
        r.map_err(|(t, code)| anyhow!("CreateTopics {t} failed: {code}"))?;
    }
    crate::poll_until(
        Duration::from_secs(20),
        &format!("topic {topic} to have {partitions} partitions with leaders"),
        || async {
            let leaders = partition_leaders(brokers, topic).await?;
            Ok((leaders.len() == partitions as usize).then_some(()))
        },
    )
    .await
}

/// A producer configuration for tests: bootstrap servers, short timeouts, and (when
/// `transactional_id` is given) transactions with idempotence.
pub fn producer_config(brokers: &str, transactional_id: Option<&str>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("message.timeout.ms", "30000")
        .set("socket.timeout.ms", "10000");
    if let Some(id) = transactional_id {
        c.set("transactional.id", id)
            .set("enable.idempotence", "true")
            .set("transaction.timeout.ms", "60000");
    }
    c
}

/// A consumer configuration for tests that `assign()` partitions (no group join, which takes
/// about `session.timeout.ms / 2` on tansu): a unique group id, no auto commit, low timeouts.
pub fn consumer_config(brokers: &str, isolation_level: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("group.id", crate::unique_topic("syncmesh-tests-group"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("fetch.wait.max.ms", "100")
        .set("isolation.level", isolation_level);
    c
}

/// One committed record: `(key, value, offset)`.
pub type CommittedRecord = (Option<Vec<u8>>, Option<Vec<u8>>, i64);

/// The records of `topic`/`partition` that Kafka's `read_committed` defines as visible, in offset
/// order, each exactly once, up to the high watermark at the time of the call. See the module
/// documentation for the rules; [`read_partition`] also returns the aborted and open records.
pub async fn committed_records(
    brokers: &str,
    topic: &str,
    partition: i32,
) -> anyhow::Result<Vec<CommittedRecord>> {
    Ok(read_partition(brokers, topic, partition)
        .await?
        .committed
        .into_iter()
        .map(|r| (r.key, r.value, r.offset))
        .collect())
}

/// One data record of the log, with what the reader knows of its transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Whether the record's batch was transactional.
    pub transactional: bool,
    /// The producer id of the record's batch (-1 when the producer had none).
    pub producer_id: i64,
    pub producer_epoch: i16,
}

/// A control marker found in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub offset: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
}

/// A partition read through its control markers.
#[derive(Debug, Clone, Default)]
pub struct PartitionView {
    /// Visible records (non-transactional, or of a committed transaction), in offset order.
    pub committed: Vec<LogRecord>,
    /// Records of aborted transactions, in offset order.
    pub aborted: Vec<LogRecord>,
    /// Records of transactions with no marker yet (not visible), in offset order.
    pub open: Vec<LogRecord>,
    /// The COMMIT/ABORT markers, in offset order.
    pub markers: Vec<Marker>,
    /// The high watermark at the first fetch: the read covers `[log start, high_watermark)`.
    pub high_watermark: i64,
    /// The last stable offset the broker reported at the first fetch.
    pub last_stable_offset: i64,
    /// How many entries the broker's aborted-transactions lists carried over all fetches (tansu:
    /// always 0, which is the defect this reader exists for).
    pub aborted_transactions_reported: usize,
}

const CONTROL_ABORT: i16 = 0;
const CONTROL_COMMIT: i16 = 1;
const ERROR_OFFSET_OUT_OF_RANGE: i16 = 1;

/// Reads `topic`/`partition` from its start to the high watermark (as of the first fetch) with
/// `read_uncommitted`, and sorts every data record into committed, aborted or open by the control
/// markers that follow it.
pub async fn read_partition(
    brokers: &str,
    topic: &str,
    partition: i32,
) -> anyhow::Result<PartitionView> {
    let leader = partition_leaders(brokers, topic)
        .await?
        .remove(&partition)
        .ok_or_else(|| anyhow!("partition {topic}/{partition} has no leader"))?;
    let mut conn = Connection::connect(&leader).await?;
    let version = conn.version_for(ApiKey::Fetch, 4, 12)?;

    let mut log = LogReader::new(0);
    let mut high_watermark: Option<i64> = None;
    let mut max_bytes: i32 = 8 << 20;
    let mut empty_fetches = 0;

    loop {
        let offset = log.next_offset;
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(100)
            .with_min_bytes(1)
            .with_max_bytes(max_bytes)
            .with_isolation_level(0) // read_uncommitted: we apply the markers ourselves
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(partition)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(max_bytes),
                    ]),
            ]);
        let response = conn.send(&request, version).await?;
        if response.error_code != 0 {
            bail!(
                "Fetch {topic}/{partition}: error code {}",
                response.error_code
            );
        }
        let data = response
            .responses
            .into_iter()
            .flat_map(|t| t.partitions)
            .find(|p| p.partition_index == partition)
            .ok_or_else(|| anyhow!("Fetch response has no {topic}/{partition}"))?;
        if data.error_code == ERROR_OFFSET_OUT_OF_RANGE && data.log_start_offset > offset {
            log.next_offset = data.log_start_offset;
            continue;
        }
        if data.error_code != 0 {
            bail!(
                "Fetch {topic}/{partition} at offset {offset}: error code {}",
                data.error_code
            );
        }
        log.view.aborted_transactions_reported += data.aborted_transactions.map_or(0, |a| a.len());
        let end = *high_watermark.get_or_insert_with(|| {
            log.view.high_watermark = data.high_watermark;
            log.view.last_stable_offset = data.last_stable_offset;
            data.high_watermark
        });
        if offset >= end {
            break;
        }

        let leftover = log.feed(data.records.unwrap_or_default())?;
        if log.next_offset == offset {
            if leftover > 0 && max_bytes < (256 << 20) {
                max_bytes *= 2; // a batch larger than what we asked for
            } else {
                empty_fetches += 1;
                if empty_fetches > 50 {
                    bail!(
                        "Fetch {topic}/{partition} made no progress at offset {offset} (high \
                         watermark {end}) in 50 fetches"
                    );
                }
            }
        }
    }
    Ok(log.finish())
}

/// Walks a partition's log (the `records` bytes of Fetch responses, in order) and sorts its data
/// records by the control markers. Separate from the network code so the rules can be tested on
/// encoded batches.
pub struct LogReader {
    /// The offset the next fetch starts at.
    pub next_offset: i64,
    pending: HashMap<i64, Vec<LogRecord>>,
    view: PartitionView,
}

impl LogReader {
    /// A reader that ignores records below `start_offset`.
    pub fn new(start_offset: i64) -> Self {
        Self {
            next_offset: start_offset,
            pending: HashMap::new(),
            view: PartitionView::default(),
        }
    }

    /// Consumes the complete record batches in `records` (a Fetch response's partition records)
    /// and returns how many bytes were left over: a partial batch at the end, which a fetch with
    /// a larger size limit will return whole.
    pub fn feed(&mut self, mut records: Bytes) -> anyhow::Result<usize> {
        while records.len() >= 12 {
            let base_offset = (&records[0..8]).get_i64();
            let length = (&records[8..12]).get_i32();
            if length < 0 {
                bail!("negative record batch length {length} at offset {base_offset}");
            }
            let total = 12 + length as usize;
            if records.len() < total {
                break; // a partial batch at the end of the response
            }
            let mut batch = records.split_to(total);
            if batch.len() < 27 {
                bail!("record batch at offset {base_offset} is too short");
            }
            let magic = batch[16] as i8;
            if magic != 2 {
                bail!("record batch at offset {base_offset} has magic {magic}; only v2 is read");
            }
            let last_offset_delta = (&batch[23..27]).get_i32();
            let next = base_offset + i64::from(last_offset_delta) + 1;
            if next <= self.next_offset {
                continue; // a batch read already (a fetch can start mid-batch)
            }
            let set = RecordBatchDecoder::decode(&mut batch)
                .with_context(|| format!("decoding the record batch at offset {base_offset}"))?;
            for record in set.records {
                if record.offset >= self.next_offset {
                    self.record(record)?;
                }
            }
            self.next_offset = next;
        }
        Ok(records.len())
    }

    fn record(&mut self, record: kafka_protocol::records::Record) -> anyhow::Result<()> {
        if record.control {
            let kind = record
                .key
                .as_ref()
                .filter(|k| k.len() >= 4)
                .map(|k| (&k[2..4]).get_i16())
                .ok_or_else(|| anyhow!("control record at offset {} has no type", record.offset))?;
            let commit = match kind {
                CONTROL_COMMIT => true,
                CONTROL_ABORT => false,
                _ => return Ok(()), // other control types (e.g. leader change) carry no data
            };
            self.view.markers.push(Marker {
                offset: record.offset,
                producer_id: record.producer_id,
                producer_epoch: record.producer_epoch,
                commit,
            });
            // A marker ends the producer's transaction whatever epoch wrote its records: the
            // ABORT a fencing InitProducerId writes carries the new epoch.
            let done = self.pending.remove(&record.producer_id).unwrap_or_default();
            if commit {
                self.view.committed.extend(done);
            } else {
                self.view.aborted.extend(done);
            }
            return Ok(());
        }
        let r = LogRecord {
            offset: record.offset,
            key: record.key.map(|b| b.to_vec()),
            value: record.value.map(|b| b.to_vec()),
            headers: record
                .headers
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.map(|b| b.to_vec())))
                .collect(),
            transactional: record.transactional,
            producer_id: record.producer_id,
            producer_epoch: record.producer_epoch,
        };
        if r.transactional {
            self.pending.entry(r.producer_id).or_default().push(r);
        } else {
            self.view.committed.push(r);
        }
        Ok(())
    }

    /// The view so far: transactions without a marker are open.
    pub fn finish(mut self) -> PartitionView {
        self.view.open = self.pending.into_values().flatten().collect();
        for list in [
            &mut self.view.committed,
            &mut self.view.aborted,
            &mut self.view.open,
        ] {
            list.sort_by_key(|r| r.offset);
        }
        self.view
    }
}

/// The leader (`host:port`) of each partition of `topic`, from a Metadata request to the first
/// reachable broker of `brokers`.
pub async fn partition_leaders(
    brokers: &str,
    topic: &str,
) -> anyhow::Result<BTreeMap<i32, String>> {
    let mut last_err = None;
    for bootstrap in brokers.split(',').map(str::trim).filter(|b| !b.is_empty()) {
        match Connection::connect(bootstrap).await {
            Ok(mut conn) => {
                let version = conn.version_for(ApiKey::Metadata, 1, 9)?;
                let request = MetadataRequest::default()
                    .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
                        TopicName(StrBytes::from_string(topic.to_string())),
                    ))]))
                    .with_allow_auto_topic_creation(false);
                let response = conn.send(&request, version).await?;
                let hosts: HashMap<i32, String> = response
                    .brokers
                    .iter()
                    .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
                    .collect();
                let t = response
                    .topics
                    .into_iter()
                    .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
                    .ok_or_else(|| anyhow!("Metadata response does not list topic {topic}"))?;
                if t.error_code != 0 {
                    bail!("Metadata for topic {topic}: error code {}", t.error_code);
                }
                return Ok(t
                    .partitions
                    .into_iter()
                    .filter(|p| p.error_code == 0)
                    .filter_map(|p| Some((p.partition_index, hosts.get(&p.leader_id.0)?.clone())))
                    .collect());
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| anyhow!("no brokers in {brokers:?}")))
}

/// One connection to a broker speaking the Kafka protocol, with the API versions it supports.
struct Connection {
    addr: String,
    stream: TcpStream,
    correlation_id: i32,
    versions: HashMap<i16, (i16, i16)>,
}

impl Connection {
    async fn connect(addr: &str) -> anyhow::Result<Self> {
        let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow!("connecting to Kafka broker {addr}: timed out"))?
            .with_context(|| format!("connecting to Kafka broker {addr}"))?;
        stream.set_nodelay(true)?;
        let mut conn = Connection {
            addr: addr.to_string(),
            stream,
            correlation_id: 0,
            versions: HashMap::new(),
        };
        // ApiVersions v0: every broker answers it.
        let response = conn.send(&ApiVersionsRequest::default(), 0).await?;
        if response.error_code != 0 {
            bail!("ApiVersions to {addr}: error code {}", response.error_code);
        }
        conn.versions = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(conn)
    }

    /// The highest version of `key` both sides support, within `[min, max]`.
    fn version_for(&self, key: ApiKey, min: i16, max: i16) -> anyhow::Result<i16> {
        let (lo, hi) = *self
            .versions
            .get(&(key as i16))
            .ok_or_else(|| anyhow!("broker {} does not support {key:?}", self.addr))?;
        let v = hi.min(max);
        if v < lo.max(min) {
            bail!(
                "broker {} supports {key:?} v{lo}..v{hi}; this reader needs v{min}..v{max}",
                self.addr
            );
        }
        Ok(v)
    }

    async fn send<R: Request>(&mut self, request: &R, version: i16) -> anyhow::Result<R::Response> {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("syncmesh-tests")));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header.encode(&mut buf, R::header_version(version))?;
        request.encode(&mut buf, version)?;
        let size = i32::try_from(buf.len() - 4)?;
        buf[0..4].copy_from_slice(&size.to_be_bytes());

        let io = async {
            self.stream.write_all(&buf).await?;
            let size = self.stream.read_i32().await?;
            let mut body = vec![0u8; usize::try_from(size)?];
            self.stream.read_exact(&mut body).await?;
            anyhow::Ok(Bytes::from(body))
        };
        let mut body = tokio::time::timeout(Duration::from_secs(30), io)
            .await
            .map_err(|_| anyhow!("request {} to {}: timed out", R::KEY, self.addr))?
            .with_context(|| format!("request {} to {}", R::KEY, self.addr))?;
        let response_header =
            ResponseHeader::decode(&mut body, R::Response::header_version(version))?;
        if response_header.correlation_id != self.correlation_id {
            bail!(
                "broker {} answered correlation id {} to request {}",
                self.addr,
                response_header.correlation_id,
                self.correlation_id
            );
        }
        R::Response::decode(&mut body, version)
            .with_context(|| format!("decoding the response to request {} v{version}", R::KEY))
    }
}

#[cfg(test)]
mod unit {
    use super::*;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    /// Which kind of batch a test record goes in.
    #[derive(Clone, Copy)]
    enum Kind {
        Plain,
        Txn(i64, i16),
        Commit(i64, i16),
        Abort(i64, i16),
    }

    fn record(offset: i64, kind: Kind, key: &str) -> Record {
        let (pid, epoch, transactional, control, key, value) = match kind {
            Kind::Plain => (-1, -1, false, false, key.as_bytes().to_vec(), b"v".to_vec()),
            Kind::Txn(p, e) => (p, e, true, false, key.as_bytes().to_vec(), b"v".to_vec()),
            Kind::Commit(p, e) | Kind::Abort(p, e) => {
                let t: i16 = if matches!(kind, Kind::Commit(..)) {
                    1
                } else {
                    0
                };
                let mut k = vec![0, 0];
                k.extend(t.to_be_bytes());
                (p, e, true, true, k, vec![0, 0, 0, 0, 0, 0])
            }
        };
        Record {
            transactional,
            control,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: offset as i32,
            timestamp: 1_700_000_000_000 + offset,
            key: Some(Bytes::from(key)),
            value: Some(Bytes::from(value)),
            headers: Default::default(),
        }
    }

    /// Encodes one batch per element of `batches`.
    fn log(batches: &[(Compression, Vec<Record>)]) -> Bytes {
        let mut buf = BytesMut::new();
        for (compression, records) in batches {
            RecordBatchEncoder::encode(
                &mut buf,
                records,
                &RecordEncodeOptions {
                    version: 2,
                    compression: *compression,
                },
            )
            .unwrap();
        }
        buf.freeze()
    }

    fn keys(records: &[LogRecord]) -> Vec<String> {
        records
            .iter()
            .map(|r| String::from_utf8(r.key.clone().unwrap()).unwrap())
            .collect()
    }

    /// Interleaved producers, an abort, a fenced (killed) producer whose new epoch aborts and
    /// then commits, an open transaction at the end, and every compression.
    fn sample() -> Bytes {
        use Compression::*;
        use Kind::*;
        log(&[
            (None, vec![record(0, Plain, "n1")]),
            (
                None,
                vec![record(1, Txn(1, 0), "a1"), record(2, Txn(1, 0), "a2")],
            ),
            (Gzip, vec![record(3, Txn(2, 0), "b1")]),
            (None, vec![record(4, Commit(1, 0), "")]),
            (None, vec![record(5, Abort(2, 0), "")]),
            (Snappy, vec![record(6, Txn(3, 0), "k1")]),
            (None, vec![record(7, Abort(3, 1), "")]), // the fencing InitProducerId's ABORT
            (Lz4, vec![record(8, Txn(3, 1), "k2")]),
            (None, vec![record(9, Commit(3, 1), "")]),
            (Zstd, vec![record(10, Plain, "z1"), record(11, Plain, "z2")]),
            (None, vec![record(12, Txn(4, 0), "o1")]),
        ])
    }

    fn check(view: &PartitionView) {
        assert_eq!(keys(&view.committed), ["n1", "a1", "a2", "k2", "z1", "z2"]);
        assert_eq!(keys(&view.aborted), ["b1", "k1"]);
        assert_eq!(keys(&view.open), ["o1"]);
        assert_eq!(
            view.markers
                .iter()
                .map(|m| (m.offset, m.producer_id, m.commit))
                .collect::<Vec<_>>(),
            [(4, 1, true), (5, 2, false), (7, 3, false), (9, 3, true)]
        );
    }

    #[test]
    fn markers_decide_visibility() {
        let mut reader = LogReader::new(0);
        assert_eq!(reader.feed(sample()).unwrap(), 0);
        assert_eq!(reader.next_offset, 13);
        check(&reader.finish());
    }

    #[test]
    fn partial_batches_are_left_for_the_next_fetch() {
        let full = sample();
        let mut reader = LogReader::new(0);
        // A response cut in the middle of a batch, then the next fetch from `next_offset`, which
        // a broker answers from the start of the batch holding that offset (here: everything).
        let leftover = reader.feed(full.slice(0..full.len() / 2)).unwrap();
        assert!(leftover > 0);
        let resumed_at = reader.next_offset;
        assert!(resumed_at > 0 && resumed_at < 13, "{resumed_at}");
        assert_eq!(reader.feed(full).unwrap(), 0);
        check(&reader.finish());
    }

    #[test]
    fn records_below_the_start_offset_are_skipped() {
        let mut reader = LogReader::new(2);
        reader.feed(sample()).unwrap();
        let view = reader.finish();
        assert_eq!(keys(&view.committed), ["a2", "k2", "z1", "z2"]);
    }
}
