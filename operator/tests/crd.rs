//! The committed CRD copies are exactly what `syncmesh crd` prints from the Rust types.

mod common;

use common::{repo_root, syncmesh, text};

#[test]
fn committed_crds_match_the_generated_one() {
    let out = syncmesh(&["crd"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let generated = text(&out.stdout);
    assert!(generated.contains("name: syncpipelines.syncmesh.io"));
    assert!(generated.contains("- sp"), "short name `sp`");
    for copy in [
        "deploy/crds/syncpipelines.syncmesh.io.yaml",
        "charts/syncmesh/crds/syncpipelines.syncmesh.io.yaml",
    ] {
        let committed = std::fs::read_to_string(repo_root().join(copy)).unwrap_or_default();
        assert!(
            committed == generated,
            "{copy} is out of date: run `cargo run -p syncmesh -- crd > {copy}`"
        );
    }
}
