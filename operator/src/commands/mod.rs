//! One module per subcommand.

pub mod check;
pub mod crd;
pub mod flatfile;
pub mod logminer;
pub mod operator;
pub mod run;
pub mod shadow;
pub mod validate;
pub mod worker;
