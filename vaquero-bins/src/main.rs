//! `vaquero`: bare-metal provisioning as code.

mod commands;
mod plan;
mod power;

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
    #[command(subcommand)]
    command: Command,
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
enum Command {
    /// Validate a SoT: report every problem as file:line:col (exit 1 on errors).
    Validate {
        /// The SoT directory.
        #[arg(long = "sot", value_name = "DIR")]
        sot: Option<PathBuf>,
        /// The SoT directory (same as --sot).
        #[arg(value_name = "DIR", conflicts_with = "sot")]
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
        #[arg(long, value_name = "DIR")]
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
    },
    /// Show what changes between two revisions of a Git SoT.
    Diff {
        /// The Git repository (a path or file:// URL).
        #[arg(long, value_name = "REPO")]
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
    },
    /// Show what a SoT change would do to each host: reprovision, new,
    /// unchanged, skip or removed, in which batches, and why.
    Plan {
        /// The SoT directory (a Git repository, a path or file:// URL, for
        /// --from/--to).
        #[arg(long, value_name = "DIR")]
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
    },
    /// Power or boot-device control of one host through its BMC (exit 1 when
    /// the BMC operation fails). Secrets come from the environment or files,
    /// as the SoT's password_env / password_file say.
    Power {
        /// The SoT directory.
        #[arg(long, value_name = "DIR")]
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
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VAQUERO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate {
            sot,
            dir,
            branch,
            format,
        } => match sot.or(dir) {
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
        } => commands::preview(&sot, &mac, boot.as_deref(), stage),
        Command::Diff {
            sot,
            branch,
            from,
            to,
            format,
        } => commands::diff(&sot, branch.as_deref(), &from, &to, format),
        Command::Plan {
            sot,
            branch,
            from,
            to,
            format,
        } => plan::plan(
            &sot,
            branch.as_deref(),
            from.as_deref(),
            to.as_deref(),
            format,
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
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
