//! Sources: each reads one kind of system and pushes `ChangeEvent`s with their positions.

pub mod flatfile;
pub mod oracle;
pub mod tidb;
