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
pub enum ScriptError {
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

fn check(what: &'static str, value: &str, allow_spaces: bool) -> Result<(), ScriptError> {
    let why = if value.contains(['\n', '\r']) {
        Some("it contains a line break")
    } else if value.contains("${") {
        Some("iPXE would expand `${`")
    } else if !allow_spaces && value.contains(char::is_whitespace) {
        Some("it contains whitespace")
    } else if value.is_empty() && !allow_spaces {
        Some("it is empty")
    } else {
        None
    };
    match why {
        Some(why) => Err(ScriptError::Unsafe {
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
}

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
        }
    }

    /// `echo TEXT`; `${` and line breaks are dropped from the text.
    pub fn echo(&mut self, text: &str) -> &mut Self {
        let clean: String = text
            .replace("${", "$ {")
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
            .collect();
        let _ = writeln!(self.text, "echo {clean}");
        self
    }

    /// `kernel --name NAME URL`.
    pub fn kernel(&mut self, name: &str, url: &str) -> Result<&mut Self, ScriptError> {
        check("image name", name, false)?;
        check("kernel URL", url, false)?;
        let _ = writeln!(self.text, "kernel --name {name} {url}");
        Ok(self)
    }

    /// `initrd --name NAME URL`.
    pub fn initrd(&mut self, name: &str, url: &str) -> Result<&mut Self, ScriptError> {
        check("image name", name, false)?;
        check("initrd URL", url, false)?;
        let _ = writeln!(self.text, "initrd --name {name} {url}");
        Ok(self)
    }

    /// `imgargs IMAGE ARGS…` (the kernel command line).
    pub fn imgargs(&mut self, image: &str, args: &str) -> Result<&mut Self, ScriptError> {
        check("image name", image, false)?;
        check("command line", args, true)?;
        let _ = writeln!(self.text, "imgargs {image} {args}");
        Ok(self)
    }

    /// `boot IMAGE`.
    pub fn boot(&mut self, image: &str) -> Result<&mut Self, ScriptError> {
        check("image name", image, false)?;
        let _ = writeln!(self.text, "boot {image}");
        Ok(self)
    }

    /// `exit`: leave iPXE so the firmware boots the next device (local disk).
    pub fn exit(&mut self) -> &mut Self {
        self.text.push_str("exit\n");
        self
    }

    /// The script text.
    pub fn render(&self) -> &str {
        &self.text
    }
}

/// The script that loads a rendered boot stage: kernel, initrds (named
/// `initrd0`, `initrd1`, … and passed with `initrd=` so EFI stub kernels
/// find them), command line, boot.
pub fn boot_script(title: &str, boot: &vaquero_model::RenderedBoot) -> Result<Script, ScriptError> {
    let mut s = Script::new();
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

/// The script for a host with nothing to do: boot from the local disk.
pub fn local_boot_script(why: &str) -> Script {
    let mut s = Script::new();
    s.echo(&format!("{why}: booting from local disk"));
    s.exit();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let s = boot_script("t", &b).unwrap();
        assert_eq!(
            s.render(),
            "#!ipxe\necho t\nkernel --name kernel http://a/k\ninitrd --name initrd0 http://a/i\nimgargs kernel initrd=initrd0 console=ttyS0\nboot kernel\n"
        );
    }
}
