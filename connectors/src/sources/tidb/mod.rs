//! TiDB CDC: the TiCDC changefeed consumer and consistent snapshots over the MySQL protocol.
//!
//! - `canal` and `debezium` decode TiCDC's two JSON protocols into `Message`s;
//! - `mysql_type` types the text values by their MySQL type;
//! - `merge` orders a multi-partition changefeed by commit TS using the watermarks and drops
//!   TiCDC's duplicates;
//! - `changefeed` is the pipeline source that consumes the topic from Kafka.

pub mod canal;
pub mod changefeed;
pub mod debezium;
pub mod merge;
pub mod message;
pub mod metrics;
pub mod mysql_type;
pub mod schemas;
pub mod snapshot;

pub use changefeed::{ChangefeedSource, TidbError};
