//! `vaquero`: bare-metal provisioning as code.

mod client;
mod commands;
mod json;
mod migrate;
mod plan;
mod power;
mod remote;
mod standalone;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

// Per-request allocations of the boot service under many connections are
// cheaper with mimalloc than with glibc's malloc (bench/http).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Bare-metal provisioning as code.
#[derive(Debug, Parser)]
#[command(name = "vaquero", version, about)]
struct Cli {
    /// Log format on stderr (RUST_LOG filters; default info for
    /// standalone, warn otherwise).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// More log lines: -v info, -vv debug, -vvv trace (RUST_LOG wins).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    verbose: u8,
    /// Errors only (RUST_LOG wins).
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// One readable line per event.
    Text,
    /// One JSON object per line.
    Json,
}

/// Output format.
#[derive(Debug, Clone, Copy, Default, ValueEnum)]
enum Format {
    /// For people.
    #[default]
    Text,
    /// For programs.
    Json,
}

#[derive(Debug, Subcommand)]
enum CertsAction {
    /// Make a CA (10 years) and a server certificate signed by it (1
    /// year): ca.pem, ca.key, server.pem, server.key in --out; prints the
    /// CA's fingerprint. Refuses when a CA is there already.
    Init {
        /// Where the files go.
        #[arg(long, value_name = "DIR")]
        out: std::path::PathBuf,
        /// The server's names and addresses, as clients reach it.
        #[arg(long = "host", value_name = "NAME", required = true)]
        hosts: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum TokenAction {
    /// Make a token; it is printed once and never shown again.
    Create {
        /// What it may do: admin (everything), read (reading only), or
        /// agent (a join token: enrols one agent of `--site`, once).
        #[arg(long, default_value = "read")]
        role: vaquero_engine::auth::Role,
        /// A join token's agent (default: the site's only agent).
        #[arg(long, value_name = "ID")]
        agent: Option<String>,
        /// A note kept with it (who holds it, what for).
        #[arg(long, default_value = "")]
        note: String,
        #[command(flatten)]
        api: client::Api,
    },
    /// Every token: id, role, note, when made, when revoked.
    List(client::Api),
    /// Refuse a token from now on.
    Revoke {
        /// Its id (`vaquero token list`).
        id: String,
        #[command(flatten)]
        api: client::Api,
    },
}

#[derive(Debug, Subcommand)]
enum AgentsAction {
    /// The site's agents: named by the SoT, enrolled, last call.
    List(client::Api),
    /// Refuse an agent's certificates from now on (it must enrol again
    /// with a new join token).
    Revoke {
        /// The agent's id.
        agent: String,
        #[command(flatten)]
        api: client::Api,
    },
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one site on this machine: the engine, DHCP, TFTP, the HTTP boot
    /// service and the user API, with the embedded store.
    Standalone(standalone::Args),
    /// Run the control plane of many sites: each site's engine, plans and
    /// rollout, its agents served over HTTPS (mTLS), and the user API.
    Server(Box<remote::ServerArgs>),
    /// Run one site's DHCP, TFTP, HTTP boot service, power actions and
    /// jobs for a `vaquero server`, booting machines from its cache when
    /// the server is away.
    Agent(remote::AgentArgs),
    /// The site's status: revision served, pending plan, rollout progress.
    Status(client::Api),
    /// Every host with its phase, stage, attempt and last event (from the
    /// API); with --sot, offline: every host of the SoT with its workflow,
    /// interfaces and BMC.
    Hosts {
        /// List the hosts of this SoT directory instead of asking the API.
        #[arg(long, value_name = "DIR", value_parser = sot_dir)]
        sot: Option<std::path::PathBuf>,
        /// (`--site`: with --sot, only this site's hosts.)
        #[command(flatten)]
        api: client::Api,
    },
    /// One host and the timeline of each boot attempt.
    Host {
        /// The host's name.
        name: String,
        #[command(flatten)]
        api: client::Api,
    },
    /// Plans: pending and applied.
    Plans(client::Api),
    /// Approve the plan that waits (the newest, or rollout N).
    Approve {
        /// The rollout to approve.
        rollout: Option<u64>,
        #[command(flatten)]
        api: client::Api,
    },
    /// Reprovision exactly these hosts, without approval, under their
    /// workflows' policies (a plan waiting for approval keeps waiting).
    Reprovision {
        /// The hosts.
        #[arg(required = true)]
        hosts: Vec<String>,
        /// Skip the site's reboot windows.
        #[arg(long)]
        now: bool,
        #[command(flatten)]
        api: client::Api,
    },
    /// Copy Vaquero's state between stores (redb file, etcd cluster),
    /// checked by count and checksum: a lab onto HA, a backup, a restore.
    Migrate(migrate::Args),
    /// Back up the state of a running standalone or server through its
    /// API (admin token): every key at one moment, checked, written to a
    /// new redb file. Restore it with `vaquero migrate --from redb:FILE`.
    Backup {
        /// The file to write (it must not exist).
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
        #[command(flatten)]
        api: client::Api,
    },
    /// Replace a secret of a data directory, with Vaquero stopped: the
    /// first admin token (the old one is refused from the next start) or
    /// the key that signs checkpoint tokens (tokens in flight are refused).
    Rotate {
        /// Which secret.
        #[arg(value_enum)]
        secret: migrate::Secret,
        /// The data directory.
        #[arg(
            long,
            value_name = "DIR",
            env = "VAQUERO_DATA",
            default_value = "vaquero-data"
        )]
        data: PathBuf,
    },
    /// Certificates: a CA of your own and a server certificate.
    Certs {
        #[command(subcommand)]
        action: CertsAction,
    },
    /// User tokens of the API: create (printed once; only its hash is
    /// kept), list, revoke.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// A server's agents of one site: list them, revoke one.
    Agents {
        #[command(subcommand)]
        action: AgentsAction,
    },
    /// Start no new host; hosts in flight finish.
    Pause(client::Api),
    /// Start hosts again.
    Resume(client::Api),
    /// Execution records (of the current rollout, or of one host).
    Executions {
        /// Only this host's.
        #[arg(long)]
        host: Option<String>,
        #[command(flatten)]
        api: client::Api,
    },
    /// Validate a SoT: report every problem as file:line:col (exit 1 on errors).
    Validate {
        /// The SoT directory.
        #[arg(long = "sot", value_name = "DIR", env = "VAQUERO_SOT", value_parser = sot_dir)]
        sot: Option<PathBuf>,
        /// The SoT directory (same as --sot; wins over VAQUERO_SOT).
        #[arg(value_name = "DIR", value_parser = sot_dir)]
        dir: Option<PathBuf>,
        /// In a Git repository, the branch `release_tag`s are resolved
        /// beside (default: the branch HEAD names).
        #[arg(long, value_name = "BRANCH")]
        branch: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show what a machine would get: its iPXE script or an unattended config.
    Preview {
        /// The SoT directory.
        #[arg(long, value_name = "DIR", env = "VAQUERO_SOT", value_parser = sot_dir)]
        sot: PathBuf,
        /// The MAC address of the booting NIC.
        #[arg(long)]
        mac: String,
        /// Print the per-host iPXE script (the default).
        #[arg(long, conflicts_with = "boot")]
        ipxe: bool,
        /// Print the rendered unattended config of this boot id.
        #[arg(long, value_name = "ID")]
        boot: Option<String>,
        /// Which workflow stage the iPXE script is for (0-based).
        #[arg(long, default_value_t = 0, conflicts_with = "boot")]
        stage: usize,
        /// Output format (JSON: the text with its site, host, boot and kind).
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show what changes between two revisions of a Git SoT.
    Diff {
        /// The Git repository (a path or file:// URL).
        #[arg(long, value_name = "REPO", env = "VAQUERO_SOT")]
        sot: String,
        /// The branch followed (default: the branch HEAD names).
        #[arg(long, value_name = "BRANCH")]
        branch: Option<String>,
        /// The old revision (tag, branch or commit).
        #[arg(long, value_name = "REV")]
        from: String,
        /// The new revision (tag, branch or commit).
        #[arg(long, value_name = "REV")]
        to: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        /// Exit 0 when nothing changed, 2 when something did, 1 on an error.
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Show what a SoT change would do to each host: reprovision, new,
    /// unchanged, skip or removed, in which batches, and why.
    Plan {
        /// The SoT directory (a Git repository, a path or file:// URL, for
        /// --from/--to).
        #[arg(long, value_name = "DIR", env = "VAQUERO_SOT")]
        sot: String,
        /// The branch followed (default: the branch HEAD names).
        #[arg(long, value_name = "BRANCH")]
        branch: Option<String>,
        /// The revision rolled from (tag, branch or commit); without it,
        /// every host is new.
        #[arg(long, value_name = "REV")]
        from: Option<String>,
        /// The revision rolled to; without it, the directory as it is.
        #[arg(long, value_name = "REV")]
        to: Option<String>,
        /// Output format (JSON: a stable interface for CI pipelines).
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        /// Exit 0 when no host would change, 2 when some would, 1 on an
        /// error.
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Power or boot-device control of one host through its BMC (exit 1 when
    /// the BMC operation fails). Secrets come from the environment or files,
    /// as the SoT's password_env / password_file say.
    Power {
        /// The SoT directory.
        #[arg(long, value_name = "DIR", env = "VAQUERO_SOT", value_parser = sot_dir)]
        sot: PathBuf,
        /// The host: `SITE/HOST`, or a name only one site uses.
        host: String,
        /// The host's site (host names are unique within a site only).
        #[arg(long, value_name = "SITE")]
        site: Option<String>,
        /// The operation.
        #[arg(value_enum)]
        op: power::Op,
        /// For pxe/http/disk/bios: every boot from now on, not just the next.
        #[arg(long)]
        persistent: bool,
        /// For pxe/http/disk/bios: boot in UEFI mode.
        #[arg(long, conflicts_with = "legacy")]
        uefi: bool,
        /// For pxe/http/disk/bios: boot in legacy BIOS mode.
        #[arg(long)]
        legacy: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Print the version.
    Version {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish,
    /// powershell), e.g. `vaquero completions bash > /etc/bash_completion.d/vaquero`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `vaquero man | man -l -`.
    Man,
}

/// A SoT directory, as a path or a `file://` URL (as every command takes it).
fn sot_dir(s: &str) -> Result<PathBuf, String> {
    let p = s.strip_prefix("file://").unwrap_or(s);
    if p.is_empty() {
        return Err("empty path".into());
    }
    Ok(PathBuf::from(p))
}

impl Command {
    /// The output format asked for (errors are printed in it too).
    fn format(&self) -> Format {
        match self {
            Command::Status(api)
            | Command::Plans(api)
            | Command::Pause(api)
            | Command::Resume(api)
            | Command::Hosts { api, .. }
            | Command::Host { api, .. }
            | Command::Approve { api, .. }
            | Command::Reprovision { api, .. }
            | Command::Token {
                action:
                    TokenAction::Create { api, .. }
                    | TokenAction::List(api)
                    | TokenAction::Revoke { api, .. },
            }
            | Command::Agents {
                action: AgentsAction::List(api) | AgentsAction::Revoke { api, .. },
            }
            | Command::Executions { api, .. } => api.format,
            Command::Validate { format, .. }
            | Command::Preview { format, .. }
            | Command::Diff { format, .. }
            | Command::Plan { format, .. }
            | Command::Power { format, .. }
            | Command::Version { format } => *format,
            Command::Standalone(_)
            | Command::Server(_)
            | Command::Agent(_)
            | Command::Certs { .. }
            | Command::Migrate(_)
            | Command::Backup { .. }
            | Command::Rotate { .. }
            | Command::Completions { .. }
            | Command::Man => Format::Text,
        }
    }
}

fn logs(format: LogFormat, default: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("VAQUERO_LOG"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// A closed pipe (`vaquero plans --format json | head`) ends the process
/// quietly, as it does other command-line tools: Rust ignores SIGPIPE, so
/// the standard library's print panics instead; this hook turns exactly
/// that panic into a silent exit.
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if msg.starts_with("failed printing to std") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    quiet_on_closed_pipe();
    let cli = Cli::parse();
    // With --detailed-exitcode, 2 means "changes": an error is 1.
    let error_code = match &cli.command {
        Command::Plan {
            detailed_exitcode: true,
            ..
        }
        | Command::Diff {
            detailed_exitcode: true,
            ..
        } => 1,
        _ => 2,
    };
    let format = cli.command.format();
    let default = match (cli.quiet, cli.verbose, &cli.command) {
        (true, _, _) => "error",
        (_, 0, Command::Standalone(_) | Command::Server(_) | Command::Agent(_)) => "info",
        (_, 0, _) => "warn",
        (_, 1, Command::Standalone(_) | Command::Server(_) | Command::Agent(_)) | (_, 2, _) => {
            "debug"
        }
        (_, 1, _) => "info",
        _ => "trace",
    };
    logs(cli.log_format, default);
    let result = match cli.command {
        Command::Version { format } => version(format),
        Command::Completions { shell } => {
            use std::io::Write;
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "vaquero", &mut script);
            std::io::stdout()
                .write_all(&script)
                .map(|()| ExitCode::SUCCESS)
                .map_err(Into::into)
        }
        Command::Man => clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
            .render(&mut std::io::stdout())
            .map(|()| ExitCode::SUCCESS)
            .map_err(Into::into),
        Command::Standalone(args) => standalone::run(args),
        Command::Server(args) => remote::server(*args),
        Command::Agent(args) => remote::agent(args),
        Command::Migrate(args) => migrate::run(args),
        Command::Backup { to, api } => client::backup(&api, &to),
        Command::Rotate { secret, data } => migrate::rotate(secret, &data),
        Command::Status(api) => client::status(&api),
        Command::Hosts { sot: None, api, .. } => client::hosts(&api),
        Command::Hosts {
            sot: Some(dir),
            api,
        } => commands::hosts(&dir, api.site.as_deref(), api.format),
        Command::Host { name, api } => client::host(&api, &name),
        Command::Plans(api) => client::plans(&api),
        Command::Approve { rollout, api } => client::command(
            &api,
            "/v1/approve",
            Some(serde_json::json!({ "rollout": rollout })),
        ),
        Command::Reprovision { hosts, now, api } => client::command(
            &api,
            "/v1/reprovision",
            Some(serde_json::json!({ "hosts": hosts, "now": now })),
        ),
        Command::Certs {
            action: CertsAction::Init { out, hosts },
        } => vaquero_engine::pki::init(&out, &hosts, vaquero_engine::jiff::Timestamp::now())
            .map(|ca| {
                use vaquero_engine::pki::{CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY};
                for f in [CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY] {
                    println!("{}", out.join(f).display());
                }
                println!("CA fingerprint: {}", ca.fingerprint);
                ExitCode::SUCCESS
            })
            .map_err(Into::into),
        Command::Token { action } => match action {
            TokenAction::Create {
                role,
                agent,
                note,
                api,
            } => client::token_create(&api, role, agent.as_deref(), &note),
            TokenAction::List(api) => client::tokens(&api),
            TokenAction::Revoke { id, api } => {
                client::command_as(&api, "DELETE", &format!("/v1/tokens/{id}"), None)
            }
        },
        Command::Agents { action } => match action {
            AgentsAction::List(api) => client::agents(&api),
            AgentsAction::Revoke { agent, api } => {
                client::command_as(&api, "DELETE", &format!("/v1/agents/{agent}"), None)
            }
        },
        Command::Pause(api) => client::command(&api, "/v1/pause", None),
        Command::Resume(api) => client::command(&api, "/v1/resume", None),
        Command::Executions { host, api } => client::executions(&api, host.as_deref()),
        Command::Validate {
            sot,
            dir,
            branch,
            format,
        } => match dir.or(sot) {
            Some(dir) => commands::validate(&dir, branch.as_deref(), format),
            None => Err(anyhow::anyhow!(
                "give the SoT directory: vaquero validate --sot DIR"
            )),
        },
        Command::Preview {
            sot,
            mac,
            ipxe: _,
            boot,
            stage,
            format,
        } => commands::preview(&sot, &mac, boot.as_deref(), stage, format),
        Command::Diff {
            sot,
            branch,
            from,
            to,
            format,
            detailed_exitcode,
        } => commands::diff(
            &sot,
            branch.as_deref(),
            &from,
            &to,
            format,
            detailed_exitcode,
        ),
        Command::Plan {
            sot,
            branch,
            from,
            to,
            format,
            detailed_exitcode,
        } => plan::plan(
            &sot,
            branch.as_deref(),
            from.as_deref(),
            to.as_deref(),
            format,
            detailed_exitcode,
        ),
        Command::Power {
            sot,
            host,
            site,
            op,
            persistent,
            uefi,
            legacy,
            format,
        } => {
            let mode = if uefi {
                vaquero_lom::BootMode::Uefi
            } else if legacy {
                vaquero_lom::BootMode::Legacy
            } else {
                vaquero_lom::BootMode::Unchanged
            };
            power::power(&sot, site.as_deref(), &host, op, persistent, mode, format)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            match format {
                Format::Json => json::print_error(&format!("{e:#}"), error_code),
                Format::Text => eprintln!("error: {e:#}"),
            }
            ExitCode::from(error_code)
        }
    }
}

/// The exit code of `plan` and `diff`: with `--detailed-exitcode`, 2 when
/// something changes.
pub(crate) fn changes_code(detailed: bool, changes: bool) -> ExitCode {
    if detailed && changes {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

fn version(format: Format) -> anyhow::Result<ExitCode> {
    let v = env!("CARGO_PKG_VERSION");
    match format {
        Format::Text => println!("vaquero {v}"),
        Format::Json => json::print(
            "Version",
            serde_json::json!({"name": "vaquero", "version": v}),
        )?,
    }
    Ok(ExitCode::SUCCESS)
}
