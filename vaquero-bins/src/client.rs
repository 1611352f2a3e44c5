//! The CLI commands that are clients of the API: status, hosts, host,
//! plans, approve, reprovision, pause, resume, executions.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::Format;

/// How to reach the API.
#[derive(Debug, Clone, clap::Args)]
pub struct Api {
    /// The API's URL.
    #[arg(
        long,
        value_name = "URL",
        env = "VAQUERO_API",
        default_value = "http://127.0.0.1:9090"
    )]
    pub api: String,
    /// A file holding the token (default: VAQUERO_TOKEN, else
    /// ./vaquero-data/admin.token).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// A CA certificate (PEM) to trust for an https:// API with a
    /// certificate of its own.
    #[arg(long, value_name = "FILE", env = "VAQUERO_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// The site, when the server runs several (`vaquero server`); with
    /// `hosts --sot`, only this site's hosts.
    #[arg(long = "site", value_name = "ID", env = "VAQUERO_SITE")]
    pub site: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// The paths of one site's routes: under `/v1/sites/{site}` when a site
/// is named.
const SITE_ROUTES: [&str; 9] = [
    "/v1/status",
    "/v1/hosts",
    "/v1/reprovision",
    "/v1/plans",
    "/v1/approve",
    "/v1/pause",
    "/v1/resume",
    "/v1/executions",
    "/v1/agents",
];

impl Api {
    fn token(&self) -> anyhow::Result<String> {
        if let Some(f) = &self.token_file {
            return Ok(std::fs::read_to_string(f)
                .with_context(|| format!("reading the token file {}", f.display()))?
                .trim()
                .to_owned());
        }
        if let Ok(t) = std::env::var("VAQUERO_TOKEN") {
            return Ok(t.trim().to_owned());
        }
        let data = std::env::var("VAQUERO_DATA").unwrap_or_else(|_| "vaquero-data".into());
        let f = PathBuf::from(data).join(vaquero_engine::standalone::TOKEN_FILE);
        Ok(std::fs::read_to_string(&f)
            .with_context(|| {
                format!(
                    "no token: give --token-file, set VAQUERO_TOKEN, or run where {} is",
                    f.display()
                )
            })?
            .trim()
            .to_owned())
    }

    /// One request; the JSON answer, or an error with the API's message.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let token = self.token()?;
        let path = match &self.site {
            Some(site) if SITE_ROUTES.iter().any(|r| path.starts_with(r)) => {
                format!("/v1/sites/{site}{}", &path[3..])
            }
            _ => path.to_owned(),
        };
        let url = format!("{}{path}", base_url(&self.api));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let mut builder =
                reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
            if let Some(ca) = &self.ca_cert {
                let pem = std::fs::read(ca)
                    .with_context(|| format!("reading the CA certificate {}", ca.display()))?;
                builder = builder.add_root_certificate(
                    reqwest::Certificate::from_pem(&pem)
                        .with_context(|| format!("{}: not a PEM certificate", ca.display()))?,
                );
            }
            let client = builder.build()?;
            let mut req = match method {
                "POST" => client.post(&url),
                "DELETE" => client.delete(&url),
                _ => client.get(&url),
            }
            .bearer_auth(token);
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req
                .send()
                .await
                .with_context(|| format!("cannot reach the API at {}", self.api))?;
            let status = resp.status();
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                let msg = v["error"]["message"].as_str().unwrap_or("no message");
                bail!("{status}: {msg}");
            }
            Ok(v)
        })
    }
}

/// An API answer in the CLI's JSON envelope.
fn print_json(kind: &str, v: &Value) -> anyhow::Result<()> {
    crate::json::print(kind, v)
}

/// The API's base URL: `--api` as a URL, or as `HOST:PORT` (the form
/// `vaquero standalone --api` takes), which means plain HTTP.
pub fn base_url(api: &str) -> String {
    let api = api.trim().trim_end_matches('/');
    if api.contains("://") {
        api.to_owned()
    } else {
        format!("http://{api}")
    }
}

/// A JSON value as a table cell (`-` for null).
pub fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Aligns rows under a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|h| h.to_uppercase()).collect());
    for r in rows {
        line(r.clone());
    }
}

pub fn status(api: &Api) -> anyhow::Result<ExitCode> {
    let v = api.call("GET", "/v1/status", None)?;
    if let crate::Format::Json = api.format {
        print_json("Status", &v)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("site {} from {}", s(&v["site"]), s(&v["source"]));
    println!(
        "  revision {}  model {}",
        s(&v["revision"]),
        s(&v["version"])
    );
    if let Some(r) = v["rollout"].as_object() {
        println!("  rollout {} ({})", s(&r["id"]), s(&r["approval"]));
    }
    if v["paused"].as_bool() == Some(true) {
        println!("  PAUSED: no new host starts");
    }
    let phases: Vec<String> = v["phases"]
        .as_object()
        .map(|m| m.iter().map(|(k, n)| format!("{k} {n}")).collect())
        .unwrap_or_default();
    println!("  {} hosts: {}", s(&v["hosts"]), phases.join(", "));
    if let Some(p) = v["pending_plan"].as_object() {
        println!(
            "  plan of rollout {} waits for approval (vaquero approve):",
            s(&p["rollout"])
        );
        for l in s(&p["text"]).lines() {
            println!("    {l}");
        }
    }
    if let Some(r) = v["refused"].as_object() {
        println!("  revision {} REFUSED:", s(&r["revision"]));
        for e in r["errors"].as_array().into_iter().flatten() {
            println!("    {}", s(e));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn hosts(api: &Api) -> anyhow::Result<ExitCode> {
    listing(
        api,
        "/v1/hosts",
        ("Hosts", "hosts"),
        &[
            "host",
            "workflow",
            "phase",
            "stage",
            "boot",
            "attempt",
            "since",
            "last event",
        ],
        |h| {
            let last = &h["last_event"];
            vec![
                s(&h["name"]),
                s(&h["workflow"]),
                s(&h["phase"]),
                s(&h["stage"]),
                match (h["boot"].as_str(), h["boot_name"].as_str()) {
                    (Some(b), Some(n)) => format!("{b} ({n})"),
                    _ => s(&h["boot"]),
                },
                s(&h["attempt"]),
                s(&h["since"]),
                if last.is_null() {
                    "-".into()
                } else {
                    format!("{} {}", s(&last["kind"]), s(&last["detail"]))
                },
            ]
        },
    )
}

/// A listing: the API's document as is (`--format json`, printed as
/// `kind`), or a table of one row per item of its array `key`.
fn listing(
    api: &Api,
    path: &str,
    (kind, key): (&str, &str),
    header: &[&str],
    row: impl Fn(&Value) -> Vec<String>,
) -> anyhow::Result<ExitCode> {
    let v = api.call("GET", path, None)?;
    if let crate::Format::Json = api.format {
        print_json(kind, &v)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = v[key].as_array().into_iter().flatten().map(row).collect();
    table(header, &rows);
    Ok(ExitCode::SUCCESS)
}

pub fn host(api: &Api, name: &str) -> anyhow::Result<ExitCode> {
    let v = api.call("GET", &format!("/v1/hosts/{name}"), None)?;
    if let crate::Format::Json = api.format {
        print_json("Host", &v)?;
        return Ok(ExitCode::SUCCESS);
    }
    let h = &v["host"];
    println!(
        "{} ({}): {}, stage {}, attempt {}, since {}",
        s(&h["name"]),
        s(&h["workflow"]),
        s(&h["phase"]),
        s(&h["stage"]),
        s(&h["attempt"]),
        s(&h["since"])
    );
    if !h["reason"].is_null() {
        println!("  {}", s(&h["reason"]));
    }
    for a in v["attempts"].as_array().into_iter().flatten() {
        println!(
            "attempt {} ({} s, from {})",
            s(&a["attempt"]),
            s(&a["seconds"]),
            s(&a["started"])
        );
        for e in a["events"].as_array().into_iter().flatten() {
            println!(
                "  +{:>7.1}s  {:<10} {}{}",
                e["after_seconds"].as_f64().unwrap_or(0.0),
                s(&e["kind"]),
                if e["ok"].as_bool() == Some(false) {
                    "FAILED "
                } else {
                    ""
                },
                s(&e["detail"])
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn plans(api: &Api) -> anyhow::Result<ExitCode> {
    let v = api.call("GET", "/v1/plans", None)?;
    if let crate::Format::Json = api.format {
        print_json("Plans", &v)?;
        return Ok(ExitCode::SUCCESS);
    }
    for p in v["plans"].as_array().into_iter().flatten() {
        if p["kind"] == "reprovision" {
            println!(
                "reprovision by an operator during rollout {} ({}, {})",
                s(&p["rollout"]),
                s(&p["status"]),
                s(&p["created"])
            );
        } else {
            println!(
                "rollout {} ({}, {})",
                s(&p["rollout"]),
                s(&p["status"]),
                s(&p["created"])
            );
        }
        for l in s(&p["text"]).lines() {
            println!("  {l}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn command(api: &Api, path: &str, body: Option<Value>) -> anyhow::Result<ExitCode> {
    command_as(api, "POST", path, body)
}

/// A command with another method than POST.
pub fn command_as(
    api: &Api,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<ExitCode> {
    let v = api.call(method, path, body)?;
    match api.format {
        crate::Format::Json => print_json("CommandResult", &v)?,
        crate::Format::Text => println!("{}", s(&v["message"])),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn executions(api: &Api, host: Option<&str>) -> anyhow::Result<ExitCode> {
    let path = match host {
        Some(h) => format!("/v1/executions?host={h}"),
        None => "/v1/executions".into(),
    };
    let v = api.call("GET", &path, None)?;
    if let crate::Format::Json = api.format {
        print_json("Executions", &v)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = v["executions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let log = r["steps"]
                .as_array()
                .and_then(|st| st.last())
                .map(|st| s(&st["log"]))
                .unwrap_or_default();
            vec![
                s(&r["id"]),
                s(&r["action"]),
                s(&r["status"]),
                s(&r["started"]),
                s(&r["ended"]),
                log.lines().next().unwrap_or_default().to_owned(),
            ]
        })
        .collect();
    table(
        &["id", "action", "status", "started", "ended", "log"],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

/// `vaquero token create`: the token once, then its id.
pub fn token_create(
    api: &Api,
    role: vaquero_engine::auth::Role,
    agent: Option<&str>,
    note: &str,
) -> anyhow::Result<ExitCode> {
    let v = api.call(
        "POST",
        "/v1/tokens",
        Some(serde_json::json!({
            "role": role,
            "note": note,
            "site": api.site,
            "agent": agent,
        })),
    )?;
    match api.format {
        crate::Format::Json => print_json("Token", &v)?,
        crate::Format::Text => {
            println!("{}", s(&v["token"]));
            eprintln!(
                "token {} ({}): shown once, only its hash is kept",
                s(&v["record"]["id"]),
                s(&v["record"]["role"])
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `vaquero token list`.
pub fn tokens(api: &Api) -> anyhow::Result<ExitCode> {
    listing(
        api,
        "/v1/tokens",
        ("Tokens", "tokens"),
        &["id", "role", "created", "revoked", "note"],
        |t| {
            vec![
                s(&t["id"]),
                s(&t["role"]),
                s(&t["created"]),
                s(&t["revoked"]),
                s(&t["note"]),
            ]
        },
    )
}

/// `vaquero agents list`: a site's agents.
pub fn agents(api: &Api) -> anyhow::Result<ExitCode> {
    listing(
        api,
        "/v1/agents",
        ("Agents", "agents"),
        &["agent", "in sot", "enrolled", "certificates", "last call"],
        |a| {
            vec![
                s(&a["agent"]),
                if a["in_sot"].as_bool() == Some(true) {
                    "yes".into()
                } else {
                    "no".into()
                },
                s(&a["enrolled"]),
                s(&a["certificates"]),
                s(&a["last_call"]),
            ]
        },
    )
}

/// `vaquero backup --to FILE`: every key of the running Vaquero's state
/// at one moment (`GET /v1/backup`, admin), checked by count and checksum
/// and written into a new redb file — the form `vaquero migrate --from
/// redb:FILE` restores.
pub fn backup(api: &Api, to: &std::path::Path) -> anyhow::Result<ExitCode> {
    if to.exists() {
        bail!(
            "{} exists: a backup goes to a new file (move the old one away, or name another)",
            to.display()
        );
    }
    let v = api.call("GET", "/v1/backup", None)?;
    let snap: vaquero_engine::migrate::Snapshot =
        serde_json::from_value(v).context("the API's backup is not a state snapshot")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let copied = runtime.block_on(async {
        let store = vaquero_engine::RedbStore::open(to)
            .with_context(|| format!("creating {}", to.display()))?;
        snap.write_into(&store, false)
            .await
            .with_context(|| format!("writing {}", to.display()))
    });
    let copied = match copied {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(to);
            return Err(e);
        }
    };
    println!(
        "backed up and checked: {} keys, {} bytes, sha256 {} in {}",
        copied.keys,
        copied.bytes,
        copied.checksum,
        to.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn api_takes_a_url_or_host_and_port() {
        use super::base_url;
        assert_eq!(base_url("127.0.0.1:9090"), "http://127.0.0.1:9090");
        assert_eq!(
            base_url("https://vq.example:9090/"),
            "https://vq.example:9090"
        );
        assert_eq!(base_url("http://[::1]:9090"), "http://[::1]:9090");
        assert_eq!(base_url("[::1]:9090"), "http://[::1]:9090");
    }
}
