//! One module per subcommand.

pub mod crd;
pub mod flatfile;
pub mod run;
pub mod validate;
