//! TiDB CDC: the TiCDC changefeed consumer and consistent snapshots over the MySQL protocol.
