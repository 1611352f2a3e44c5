//! iPXE for Vaquero: a typed script builder and (in its own issue) the HTTP
//! boot service that serves chain scripts, per-host scripts, unattended
//! configs, files and checkpoints.
//!
//! **Status:** the script builder ([`Script`], [`boot_script`],
//! [`local_boot_script`]) is real and used by `vaquero preview`; the HTTP
//! service is built in its own issue.
//!
//! ```
//! let mut s = vaquero_ipxe::Script::new();
//! s.kernel("kernel", "http://10.0.0.2:8080/files/vmlinuz").unwrap();
//! s.boot("kernel").unwrap();
//! assert!(s.render().starts_with("#!ipxe\n"));
//! ```

mod script;

pub use script::{
    DEFAULT_TRIES, Script, ScriptError, boot_script, chain_script, local_boot_script,
};
