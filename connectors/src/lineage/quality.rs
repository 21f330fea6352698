//! The `dataQualityAssertions` input-dataset facet (OpenLineage facet spec 1-1-0), which the
//! consistency checker reports its verdicts in. It travels in `inputFacets` (the facet's
//! schema extends `InputDatasetFacet`), next to `dataQualityMetrics`.

use super::model::FacetBase;
use serde::{Deserialize, Serialize};

/// `_schemaURL` of the facet.
pub const DATA_QUALITY_ASSERTIONS_FACET_URL: &str = "https://openlineage.io/spec/facets/1-1-0/DataQualityAssertionsDatasetFacet.json#/$defs/DataQualityAssertionsDatasetFacet";

/// Tests run on a dataset and their results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataQualityAssertionsDatasetFacet {
    #[serde(flatten)]
    pub base: FacetBase,
    pub assertions: Vec<Assertion>,
}

impl DataQualityAssertionsDatasetFacet {
    pub fn new(assertions: Vec<Assertion>) -> Self {
        Self {
            base: FacetBase::new(DATA_QUALITY_ASSERTIONS_FACET_URL),
            assertions,
        }
    }
}

/// One test and whether it found no issue (`success`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assertion {
    /// The kind of test, e.g. `row_count` or `row_hash`.
    pub assertion: String,
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// `error` or `warn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual: Option<String>,
}
