//! A typed iPXE script builder.
//!
//! iPXE splits command lines on whitespace and expands `${…}` anywhere, and
//! has no escape for either. The builder therefore never writes a value it
//! cannot express: a URL or image name with whitespace, a newline, or `${`
//! is refused with an error instead of producing a script that loads
//! something else. Kernel command lines may contain spaces (they are the
//! trailing arguments of `imgargs`) but not newlines or `${`.

use std::fmt::Write;

/// A value could not be written into an iPXE script safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScriptFailure {
    /// The value contains something iPXE would split or expand.
    #[error("{what} `{value}` cannot be written into an iPXE script: {why}")]
    Unsafe {
        /// What the value is (kernel URL, image name, …).
        what: &'static str,
        /// The value.
        value: String,
        /// Why it is refused.
        why: &'static str,
    },
}

fn check(what: &'static str, value: &str, allow_spaces: bool) -> Result<(), ScriptFailure> {
    let why = if value.contains(['\n', '\r']) {
        Some("it contains a line break")
    } else if value.contains("${") {
        Some("iPXE would expand `${`")
    } else if value.contains("&&") || value.contains("||") {
        Some("iPXE would read `&&` or `||` as a command separator")
    } else if !allow_spaces && value.contains(char::is_whitespace) {
        Some("it contains whitespace")
    } else if value.is_empty() && !allow_spaces {
        Some("it is empty")
    } else {
        None
    };
    match why {
        Some(why) => Err(ScriptFailure::Unsafe {
            what,
            value: value.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

/// An iPXE script under construction.
#[derive(Debug, Clone)]
pub struct Script {
    text: String,
    /// Attempts per fetch (1 = no retry loop).
    tries: u32,
    /// Fetch loops written so far (their labels are `fetch0`, `fetch1`, …).
    loops: u32,
}

/// The label every retry loop jumps to when it gives up.
const FAILED: &str = "vaquero_failed";

impl Default for Script {
    fn default() -> Self {
        Self::new()
    }
}

impl Script {
    /// A script starting with `#!ipxe`.
    pub fn new() -> Self {
        Script {
            text: String::from("#!ipxe\n"),
            tries: 1,
            loops: 0,
        }
    }

    /// Fetches (`kernel`, `initrd`, `chain`) written after this are tried
    /// up to `tries` times, 3 s apart, before the script gives up (a flaky
    /// link or a busy agent should not fail a boot). When a loop gives up
    /// the machine reboots and starts over (or, where iPXE has no `reboot`,
    /// exits to the next boot device).
    pub fn retries(&mut self, tries: u32) -> &mut Self {
        self.tries = tries.max(1);
        self
    }

    /// Writes `command` (built by this module, never a raw user value)
    /// inside a bounded retry loop when retries are on.
    fn fetch(&mut self, what: &str, command: &str) {
        if self.tries <= 1 {
            let _ = writeln!(self.text, "{command}");
            return;
        }
        let l = format!("fetch{}", self.loops);
        self.loops += 1;
        let n = self.tries;
        let _ = writeln!(
            self.text,
            "set tries:int32 1\n:{l}\n{command} && goto {l}_ok ||\n\
             echo {what} failed (try ${{tries}} of {n})\n\
             iseq ${{tries}} {n} && goto {FAILED} ||\n\
             inc tries\nsleep 3\ngoto {l}\n:{l}_ok"
        );
    }

    /// `echo TEXT`; `${`, `&&`, `||` and line breaks are defused.
    pub fn echo(&mut self, text: &str) -> &mut Self {
        let clean: String = text
            .replace("${", "$ {")
            .replace("&&", "& &")
            .replace("||", "| |")
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
            .collect();
        let _ = writeln!(self.text, "echo {clean}");
        self
    }

    /// `kernel --name NAME URL`.
    pub fn kernel(&mut self, name: &str, url: &str) -> Result<&mut Self, ScriptFailure> {
        check("image name", name, false)?;
        check("kernel URL", url, false)?;
        self.fetch("Loading the kernel", &format!("kernel --name {name} {url}"));
        Ok(self)
    }

    /// `initrd --name NAME URL`.
    pub fn initrd(&mut self, name: &str, url: &str) -> Result<&mut Self, ScriptFailure> {
        check("image name", name, false)?;
        check("initrd URL", url, false)?;
        self.fetch(
            &format!("Loading {name}"),
            &format!("initrd --name {name} {url}"),
        );
        Ok(self)
    }

    /// `dhcp`: configure the network (retried like a fetch: a switch port
    /// that is slow to forward after link-up fails the first attempts).
    pub fn dhcp(&mut self) -> &mut Self {
        self.fetch("Configuring the network", "dhcp");
        self
    }

    /// `chain --autofree --replace URL`: load and run another script.
    pub fn chain(&mut self, url: &str) -> Result<&mut Self, ScriptFailure> {
        check("chain URL", url, false)?;
        self.fetch(
            "Fetching the boot script",
            &format!("chain --autofree --replace {url}"),
        );
        Ok(self)
    }

    /// `imgargs IMAGE ARGS…` (the kernel command line).
    pub fn imgargs(&mut self, image: &str, args: &str) -> Result<&mut Self, ScriptFailure> {
        check("image name", image, false)?;
        check("command line", args, true)?;
        let _ = writeln!(self.text, "imgargs {image} {args}");
        Ok(self)
    }

    /// `boot IMAGE` (a boot that fails gives up like a failed fetch).
    pub fn boot(&mut self, image: &str) -> Result<&mut Self, ScriptFailure> {
        check("image name", image, false)?;
        if self.loops > 0 {
            let _ = writeln!(self.text, "boot {image} || goto {FAILED}");
        } else {
            let _ = writeln!(self.text, "boot {image}");
        }
        Ok(self)
    }

    /// `exit`: leave iPXE so the firmware boots the next device (local disk).
    pub fn exit(&mut self) -> &mut Self {
        self.text.push_str("exit\n");
        self
    }

    /// Boot the local disk: UEFI firmware goes on to its next boot entry
    /// on `exit`; BIOS is told to boot the first hard disk (`sanboot`),
    /// since some BIOSes hang or loop back into PXE on `exit`.
    pub fn local_disk(&mut self) -> &mut Self {
        self.text.push_str(
            "iseq ${platform} efi && exit ||\nsanboot --no-describe --drive 0x80 || exit\n",
        );
        self
    }

    /// The script text (with the give-up tail when retry loops were
    /// written).
    pub fn render(&self) -> String {
        let mut t = self.text.clone();
        if self.loops > 0 {
            let _ = writeln!(
                t,
                "exit 0\n:{FAILED}\necho Vaquero: giving up, rebooting in 10 s\nsleep 10\nreboot || exit 1"
            );
        }
        t
    }
}

/// The script that loads a rendered boot stage: kernel, initrds (named
/// `initrd0`, `initrd1`, … and passed with `initrd=` so EFI stub kernels
/// find them), command line, boot.
pub fn boot_script(
    title: &str,
    boot: &vaquero_model::RenderedBoot,
) -> Result<Script, ScriptFailure> {
    let mut s = Script::new();
    s.retries(DEFAULT_TRIES);
    s.echo(title);
    s.kernel("kernel", &boot.kernel)?;
    let mut args = Vec::new();
    for (i, url) in boot.initrds.iter().enumerate() {
        let name = format!("initrd{i}");
        s.initrd(&name, url)?;
        args.push(format!("initrd={name}"));
    }
    if !boot.cmdline.is_empty() {
        args.push(boot.cmdline.clone());
    }
    s.imgargs("kernel", &args.join(" "))?;
    s.boot("kernel")?;
    Ok(s)
}

/// Attempts per fetch in the scripts this crate writes.
pub const DEFAULT_TRIES: u32 = 5;

/// Why a host's stage script could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StageScriptFailure {
    /// A template of the boot or its OS failed.
    #[error(transparent)]
    Render(#[from] vaquero_model::RenderFailure),
    /// A rendered value cannot go into a script.
    #[error(transparent)]
    Script(#[from] ScriptFailure),
}

/// The script of `h`'s workflow stage `stage` (boot `boot`): its OS's
/// kernel, initrds and command line rendered for the host, with checkpoint
/// URLs carrying `token`. The boot service serves it (with `attempt`);
/// `vaquero preview` prints it (without). One function, so what an
/// operator previews is what a machine gets.
pub fn stage_script(
    model: &vaquero_model::SiteModel,
    h: vaquero_model::HostRef<'_>,
    stage: usize,
    boot: &str,
    attempt: Option<u64>,
    token: &str,
) -> Result<Script, StageScriptFailure> {
    let urls = model.urls(h, boot, token);
    let ctx = model.context(h, boot, urls.as_ref());
    let r = model.render_boot(boot, &ctx)?;
    let mut title = format!(
        "Vaquero: {} stage {}/{} ({boot}, {})",
        h.host.name,
        stage + 1,
        model.stage_count(h.host),
        r.os
    );
    if let Some(a) = attempt {
        title.push_str(&format!(", attempt {a}"));
    }
    Ok(boot_script(&title, &r)?)
}

/// The script for a host with nothing to do: boot from the local disk.
pub fn local_boot_script(why: &str) -> Script {
    let mut s = Script::new();
    s.echo(&format!("{why}: booting from local disk"));
    s.local_disk();
    s
}

/// `boot.ipxe`: what every iPXE is told to load first. It chains to the
/// per-host script at `{agent}/ipxe`, identifying the machine by the MAC
/// of the NIC that booted — `${netX/mac}`, iPXE's most recently opened
/// network device, which is the one whose DHCP answer led here (`net0`
/// would name the first NIC even when a later one booted; tests/qemu.rs
/// boots a two-NIC machine from its second NIC) — hyphenated, plus its
/// SMBIOS UUID and serial, iPXE's build architecture and platform
/// (`pcbios` or `efi`).
pub fn chain_script(agent: &str) -> Result<Script, ScriptFailure> {
    let agent = agent.trim_end_matches('/');
    check("agent URL", agent, false)?;
    let mut s = Script::new();
    s.retries(DEFAULT_TRIES);
    s.echo("Vaquero: fetching this machine's boot script");
    // Our own fixed text: the `${…}` here are meant for iPXE to expand.
    s.fetch(
        "Fetching the boot script",
        &format!(
            "chain --autofree --replace {agent}/ipxe?mac=${{netX/mac:hexhyp}}&uuid=${{uuid}}&serial=${{serial:uristring}}&arch=${{buildarch}}&platform=${{platform}}"
        ),
    );
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dhcp_is_retried() {
        let mut s = Script::new();
        s.retries(3).dhcp();
        let t = s.render();
        assert!(t.contains("dhcp && goto fetch0_ok ||\n"), "{t}");
        assert!(
            t.contains("iseq ${tries} 3 && goto vaquero_failed ||"),
            "{t}"
        );
    }

    #[test]
    fn refuses_what_ipxe_would_misread() {
        let mut s = Script::new();
        assert!(s.kernel("k", "http://x/${evil}").is_err());
        assert!(s.kernel("k", "http://x/a b").is_err());
        assert!(s.imgargs("k", "a=b\nchain http://evil").is_err());
        assert!(s.imgargs("k", "console=tty0 console=ttyS0").is_ok());
        s.echo("hi ${x}\nshell");
        assert!(s.render().ends_with("echo hi $ {x} shell\n"));
    }

    #[test]
    fn boot_script_shape() {
        let b = vaquero_model::RenderedBoot {
            boot: "b".into(),
            os: "o".into(),
            kernel: "http://a/k".into(),
            initrds: vec!["http://a/i".into()],
            cmdline: "console=ttyS0".into(),
        };
        let s = boot_script("t", &b).unwrap().render();
        // Each fetch in its own bounded loop, then the command line, boot,
        // and the give-up tail. (Whole scripts: tests/snapshots.)
        let order: Vec<&str> = s
            .lines()
            .filter(|l| {
                ["#!", "kernel", "initrd", "imgargs", "boot", "reboot"]
                    .iter()
                    .any(|p| l.starts_with(p))
            })
            .collect();
        assert_eq!(
            order,
            [
                "#!ipxe",
                "kernel --name kernel http://a/k && goto fetch0_ok ||",
                "initrd --name initrd0 http://a/i && goto fetch1_ok ||",
                "imgargs kernel initrd=initrd0 console=ttyS0",
                "boot kernel || goto vaquero_failed",
                "reboot || exit 1",
            ]
        );
    }
}
