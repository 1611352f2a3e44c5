//! Helper processes for Vaquero's integration tests, one binary each
//! (`src/bin`). A test that needs one finds it with its own small
//! `testkit()` function, which builds it first when needed; they are not
//! tests themselves, so the pass count of a run means what it says.
//!
//! | binary | started by | what it does |
//! |---|---|---|
//! | `testkit-dhcp-server` | vaquero-dhcp `tests/netns.rs` | serves the lab site on an interface |
//! | `testkit-dhcp-relay` | vaquero-dhcp `tests/netns.rs` | one relayed DISCOVER, prints the reply |
//! | `testkit-dhcp-client` | vaquero-dhcp `tests/netns.rs` | sends requests on an interface, prints every reply |
//! | `testkit-ipxe-agent` | vaquero-ipxe `tests/qemu.rs` | DHCP and the boot service for a QEMU guest |
//! | `testkit-redb-writer` | vaquero-engine `tests/store.rs` | writes to redb in a loop until killed |

use std::path::{Path, PathBuf};

/// The lab SoT (`examples/lab` of the repository).
pub fn lab_sot() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab")
}
