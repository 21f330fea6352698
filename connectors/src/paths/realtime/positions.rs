//! Reading the pipeline's committed positions back from its positions topic.
//!
//! A position record written in an aborted transaction must never be taken as committed: the
//! events of that transaction would be skipped on resume, i.e. lost. Kafka's `read_committed`
//! relies on the aborted-transactions list of Fetch responses, which some brokers (tansu) never
//! fill; so this reader fetches raw record batches with `read_uncommitted` and applies the
//! COMMIT/ABORT control markers itself, which is correct on every broker:
//! - a record of a non-transactional batch is committed;
//! - a record of a transactional batch is committed once a COMMIT marker of its producer id
//!   follows it, dropped when an ABORT marker follows (fencing writes that ABORT), and not
//!   visible while its transaction is open.

use super::PositionRecord;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, BrokerId, FetchRequest, MetadataRequest, RequestHeader,
    ResponseHeader, TopicName,
    fetch_request::{FetchPartition, FetchTopic},
    metadata_request::MetadataRequestTopic,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{Record, RecordBatchDecoder};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
#[error("reading committed positions from topic `{topic}` at {brokers}: {reason}")]
pub struct PositionsError {
    pub brokers: String,
    pub topic: String,
    pub reason: String,
}

const CONTROL_ABORT: i16 = 0;
const CONTROL_COMMIT: i16 = 1;
const ERROR_OFFSET_OUT_OF_RANGE: i16 = 1;
const ERROR_UNKNOWN_TOPIC: i16 = 3;
const TIMEOUT: Duration = Duration::from_secs(30);

/// The last committed position record of each source (by the record key), read through the
/// control markers up to the high watermark as of the call. A topic that does not exist yet
/// gives an empty map.
pub async fn read_committed_positions(
    brokers: &str,
    positions_topic: &str,
) -> Result<BTreeMap<String, PositionRecord>, PositionsError> {
    let fail = |reason: String| PositionsError {
        brokers: brokers.to_string(),
        topic: positions_topic.to_string(),
        reason,
    };
    let leaders = partition_leaders(brokers, positions_topic)
        .await
        .map_err(fail)?;
    let mut out = BTreeMap::new();
    for (partition, leader) in leaders {
        for record in read_partition(&leader, positions_topic, partition)
            .await
            .map_err(fail)?
        {
            let (Some(key), Some(value)) = (record.key, record.value) else {
                continue; // a tombstone or a keyless record
            };
            let key = String::from_utf8_lossy(&key).into_owned();
            let value: PositionRecord = serde_json::from_slice(&value).map_err(|e| {
                fail(format!(
                    "the record of `{key}` at {partition}/{}: {e}",
                    record.offset
                ))
            })?;
            // Records are in offset order: the last one of a key wins.
            out.insert(key, value);
        }
    }
    Ok(out)
}

/// A data record of the log, with its transaction state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogRecord {
    pub offset: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
}

/// Sorts a partition's data records by the control markers that follow them.
#[derive(Default)]
pub(crate) struct LogReader {
    pub next_offset: i64,
    pending: HashMap<i64, Vec<LogRecord>>,
    committed: Vec<LogRecord>,
}

impl LogReader {
    /// Consumes the complete record batches in `records`; returns the bytes left over (a
    /// partial batch at the end, which a larger fetch returns whole).
    pub fn feed(&mut self, mut records: Bytes) -> Result<usize, String> {
        while records.len() >= 12 {
            let base_offset = (&records[0..8]).get_i64();
            let length = (&records[8..12]).get_i32();
            let Ok(length) = usize::try_from(length) else {
                return Err(format!(
                    "negative record batch length {length} at offset {base_offset}"
                ));
            };
            let total = 12 + length;
            if records.len() < total {
                break;
            }
            let mut batch = records.split_to(total);
            if batch.len() < 27 {
                return Err(format!("record batch at offset {base_offset} is too short"));
            }
            if batch[16] != 2 {
                return Err(format!(
                    "record batch at offset {base_offset} has magic {}; only v2 is read",
                    batch[16]
                ));
            }
            let next = base_offset + i64::from((&batch[23..27]).get_i32()) + 1;
            if next <= self.next_offset {
                continue; // read already: a fetch can start mid-batch
            }
            let set = RecordBatchDecoder::decode(&mut batch)
                .map_err(|e| format!("decoding the record batch at offset {base_offset}: {e}"))?;
            for record in set.records {
                if record.offset >= self.next_offset {
                    self.record(record)?;
                }
            }
            self.next_offset = next;
        }
        Ok(records.len())
    }

    fn record(&mut self, record: Record) -> Result<(), String> {
        if record.control {
            let kind = record
                .key
                .as_ref()
                .filter(|k| k.len() >= 4)
                .map(|k| (&k[2..4]).get_i16())
                .ok_or_else(|| format!("control record at offset {} has no type", record.offset))?;
            let commit = match kind {
                CONTROL_COMMIT => true,
                CONTROL_ABORT => false,
                _ => return Ok(()),
            };
            // A marker ends the producer's transaction whatever the epoch of its records: the
            // ABORT a fencing InitProducerId writes carries the new epoch.
            let done = self.pending.remove(&record.producer_id).unwrap_or_default();
            if commit {
                self.committed.extend(done);
            }
            return Ok(());
        }
        let r = LogRecord {
            offset: record.offset,
            key: record.key,
            value: record.value,
        };
        if record.transactional {
            self.pending.entry(record.producer_id).or_default().push(r);
        } else {
            self.committed.push(r);
        }
        Ok(())
    }

    /// The committed records, in offset order; open transactions are left out.
    pub fn finish(mut self) -> Vec<LogRecord> {
        self.committed.sort_by_key(|r| r.offset);
        self.committed
    }
}

async fn read_partition(
    leader: &str,
    topic: &str,
    partition: i32,
) -> Result<Vec<LogRecord>, String> {
    let mut conn = Connection::connect(leader).await?;
    let version = conn.version_for(ApiKey::Fetch, 4, 12)?;
    let mut log = LogReader::default();
    let mut end: Option<i64> = None;
    let mut max_bytes: i32 = 8 << 20;
    let mut stalled = 0;
    loop {
        let offset = log.next_offset;
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(100)
            .with_min_bytes(1)
            .with_max_bytes(max_bytes)
            .with_isolation_level(0) // read_uncommitted: the markers are applied here
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
            return Err(format!("Fetch: error code {}", response.error_code));
        }
        let data = response
            .responses
            .into_iter()
            .flat_map(|t| t.partitions)
            .find(|p| p.partition_index == partition)
            .ok_or_else(|| format!("the Fetch response has no partition {partition}"))?;
        if data.error_code == ERROR_OFFSET_OUT_OF_RANGE && data.log_start_offset > offset {
            log.next_offset = data.log_start_offset;
            continue;
        }
        if data.error_code != 0 {
            return Err(format!(
                "Fetch {partition} at offset {offset}: error code {}",
                data.error_code
            ));
        }
        let end = *end.get_or_insert(data.high_watermark);
        if offset >= end {
            break;
        }
        let leftover = log.feed(data.records.unwrap_or_default())?;
        if log.next_offset == offset {
            if leftover > 0 && max_bytes < (256 << 20) {
                max_bytes *= 2;
            } else {
                stalled += 1;
                if stalled > 50 {
                    return Err(format!(
                        "Fetch {partition} made no progress at offset {offset} (high watermark \
                         {end})"
                    ));
                }
            }
        }
    }
    Ok(log.finish())
}

/// The leader of each partition of `topic`; empty when the topic does not exist.
async fn partition_leaders(brokers: &str, topic: &str) -> Result<BTreeMap<i32, String>, String> {
    let mut last_err = None;
    for bootstrap in brokers.split(',').map(str::trim).filter(|b| !b.is_empty()) {
        let mut conn = match Connection::connect(bootstrap).await {
            Ok(conn) => conn,
            Err(e) => {
                last_err = Some(e);
                continue;
            }
        };
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
        let Some(t) = response
            .topics
            .into_iter()
            .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
        else {
            return Ok(BTreeMap::new());
        };
        if t.error_code == ERROR_UNKNOWN_TOPIC {
            return Ok(BTreeMap::new());
        }
        if t.error_code != 0 {
            return Err(format!("Metadata: error code {}", t.error_code));
        }
        let mut leaders = BTreeMap::new();
        for p in t.partitions {
            let leader = hosts
                .get(&p.leader_id.0)
                .filter(|_| p.error_code == 0)
                .ok_or_else(|| format!("partition {} has no leader", p.partition_index))?;
            leaders.insert(p.partition_index, leader.clone());
        }
        return Ok(leaders);
    }
    Err(last_err.unwrap_or_else(|| "no brokers given".to_string()))
}

/// One connection to a broker, with the API versions it supports.
struct Connection {
    addr: String,
    stream: TcpStream,
    correlation_id: i32,
    versions: HashMap<i16, (i16, i16)>,
}

impl Connection {
    async fn connect(addr: &str) -> Result<Self, String> {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connecting to {addr}: timed out"))?
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        let mut conn = Connection {
            addr: addr.to_string(),
            stream,
            correlation_id: 0,
            versions: HashMap::new(),
        };
        let response = conn.send(&ApiVersionsRequest::default(), 0).await?;
        if response.error_code != 0 {
            return Err(format!(
                "ApiVersions to {addr}: error code {}",
                response.error_code
            ));
        }
        conn.versions = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(conn)
    }

    fn version_for(&self, key: ApiKey, min: i16, max: i16) -> Result<i16, String> {
        let (lo, hi) = *self
            .versions
            .get(&(key as i16))
            .ok_or_else(|| format!("broker {} does not support {key:?}", self.addr))?;
        let v = hi.min(max);
        if v < lo.max(min) {
            return Err(format!(
                "broker {} supports {key:?} v{lo}..v{hi}; v{min}..v{max} is needed",
                self.addr
            ));
        }
        Ok(v)
    }

    async fn send<R: Request>(&mut self, request: &R, version: i16) -> Result<R::Response, String> {
        let what = format!("request {:?} v{version} to {}", R::KEY, self.addr);
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("syncmesh")));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header
            .encode(&mut buf, R::header_version(version))
            .map_err(|e| format!("{what}: {e}"))?;
        request
            .encode(&mut buf, version)
            .map_err(|e| format!("{what}: {e}"))?;
        let size = i32::try_from(buf.len() - 4).map_err(|e| format!("{what}: {e}"))?;
        buf[0..4].copy_from_slice(&size.to_be_bytes());
        let io = async {
            self.stream.write_all(&buf).await?;
            let size = self.stream.read_i32().await?;
            let size = usize::try_from(size).map_err(std::io::Error::other)?;
            let mut body = vec![0u8; size];
            self.stream.read_exact(&mut body).await?;
            std::io::Result::Ok(Bytes::from(body))
        };
        let mut body = tokio::time::timeout(TIMEOUT, io)
            .await
            .map_err(|_| format!("{what}: timed out"))?
            .map_err(|e| format!("{what}: {e}"))?;
        let header = ResponseHeader::decode(&mut body, R::Response::header_version(version))
            .map_err(|e| format!("{what}: {e}"))?;
        if header.correlation_id != self.correlation_id {
            return Err(format!(
                "{what}: answered correlation id {}",
                header.correlation_id
            ));
        }
        R::Response::decode(&mut body, version).map_err(|e| format!("{what}: decoding: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{
        Compression, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    enum Kind {
        Data(&'static str),
        Marker(i16),
    }

    fn batch(buf: &mut BytesMut, offset: i64, pid: i64, transactional: bool, kind: Kind) {
        let (control, key, value) = match kind {
            Kind::Data(k) => (false, Bytes::from(k), Bytes::from_static(b"v")),
            Kind::Marker(t) => {
                let mut key = BytesMut::new();
                key.put_i16(0);
                key.put_i16(t);
                let mut value = BytesMut::new();
                value.put_i16(0);
                value.put_i32(0);
                (true, key.freeze(), value.freeze())
            }
        };
        let record = Record {
            transactional,
            control,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: if control { -1 } else { 0 },
            timestamp: 0,
            key: Some(key),
            value: Some(value),
            headers: Default::default(),
        };
        RecordBatchEncoder::encode(
            buf,
            [&record],
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .expect("encode");
    }

    fn log() -> Bytes {
        let mut buf = BytesMut::new();
        batch(&mut buf, 0, 1, true, Kind::Data("committed"));
        batch(&mut buf, 1, 2, true, Kind::Data("aborted"));
        batch(&mut buf, 2, 1, true, Kind::Marker(CONTROL_COMMIT));
        batch(&mut buf, 3, 2, true, Kind::Marker(CONTROL_ABORT));
        batch(&mut buf, 4, -1, false, Kind::Data("plain"));
        batch(&mut buf, 5, 3, true, Kind::Data("open"));
        buf.freeze()
    }

    fn keys(records: &[LogRecord]) -> Vec<(i64, String)> {
        records
            .iter()
            .map(|r| {
                let key = r.key.as_deref().unwrap_or_default();
                (r.offset, String::from_utf8_lossy(key).into_owned())
            })
            .collect()
    }

    #[test]
    fn markers_decide_what_is_committed() {
        let mut reader = LogReader::default();
        assert_eq!(reader.feed(log()).expect("feed"), 0);
        assert_eq!(reader.next_offset, 6);
        assert_eq!(
            keys(&reader.finish()),
            vec![(0, "committed".to_string()), (4, "plain".to_string())]
        );
    }

    #[test]
    fn a_partial_batch_is_left_for_the_next_fetch_and_nothing_is_read_twice() {
        let all = log();
        let mut reader = LogReader::default();
        let cut = all.len() - 10;
        let left = reader.feed(all.slice(..cut)).expect("feed");
        assert!(left > 0);
        assert_eq!(reader.next_offset, 5);
        // The next fetch starts at offset 5 but the broker may return earlier batches again.
        assert_eq!(reader.feed(all).expect("feed"), 0);
        assert_eq!(
            keys(&reader.finish()),
            vec![(0, "committed".to_string()), (4, "plain".to_string())]
        );
    }
}
