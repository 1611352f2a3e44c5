//! The one envelope of every `--format json` document the CLI prints:
//!
//! ```json
//! {"apiVersion": "vaquero/v1", "kind": "Plan", ...the document's own keys}
//! ```
//!
//! `apiVersion` changes only when a document's existing keys change
//! meaning or go away (new keys may appear within a version). An error,
//! with `--format json`, is a document of kind `Error` on stdout:
//! `{"apiVersion": "vaquero/v1", "kind": "Error", "error": {"message": …,
//! "exit_code": …}}`. docs/json.md lists the kinds; `plan`'s document has
//! a JSON Schema in docs/schema/plan.v1.json.

use serde::Serialize;
use serde_json::{Map, Value};

/// The version of every document's shape.
pub const API_VERSION: &str = "vaquero/v1";

/// `payload` (an object) in the envelope.
pub fn envelope(kind: &str, payload: impl Serialize) -> anyhow::Result<Value> {
    let Value::Object(fields) = serde_json::to_value(payload)? else {
        anyhow::bail!("a `{kind}` document must be an object");
    };
    let mut out = Map::new();
    out.insert("apiVersion".into(), API_VERSION.into());
    out.insert("kind".into(), kind.into());
    for (k, v) in fields {
        if out.contains_key(&k) {
            anyhow::bail!("a `{kind}` document has its own `{k}`");
        }
        out.insert(k, v);
    }
    Ok(Value::Object(out))
}

/// Prints `payload` in the envelope, on stdout.
pub fn print(kind: &str, payload: impl Serialize) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(&envelope(kind, payload)?)?
    );
    Ok(())
}

/// Prints an error document on stdout.
pub fn print_error(message: &str, exit_code: u8) {
    let doc = serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": "Error",
        "error": { "message": message, "exit_code": exit_code },
    });
    println!("{doc:#}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_carry_the_version_and_kind() {
        let v = envelope("Hosts", serde_json::json!({"hosts": []})).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"apiVersion": "vaquero/v1", "kind": "Hosts", "hosts": []})
        );
        assert!(envelope("X", serde_json::json!([1])).is_err());
        assert!(envelope("X", serde_json::json!({"kind": 1})).is_err());
    }
}
