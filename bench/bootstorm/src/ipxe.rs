//! What iPXE does with a script, as far as a boot goes: `chain` to the
//! next script, or `kernel` / `initrd` / `imgargs` then `boot`. Settings
//! (`${…}`) are expanded from the machine's own.

/// The machine's settings that scripts use.
pub struct Settings<'a> {
    /// MAC, colon-separated, lower case.
    pub mac: &'a str,
    /// SMBIOS UUID.
    pub uuid: &'a str,
    /// UEFI (`efi`, `x86_64`) or BIOS (`pcbios`, `i386`, as undionly is).
    pub uefi: bool,
}

impl Settings<'_> {
    fn get(&self, name: &str) -> String {
        let (name, kind) = name.split_once(':').unwrap_or((name, ""));
        match name {
            "netX/mac" | "net0/mac" | "mac" => {
                if kind == "hexhyp" {
                    self.mac.replace(':', "-")
                } else {
                    self.mac.to_owned()
                }
            }
            "uuid" => self.uuid.to_owned(),
            "buildarch" => if self.uefi { "x86_64" } else { "i386" }.to_owned(),
            "platform" => if self.uefi { "efi" } else { "pcbios" }.to_owned(),
            "manufacturer" => "QEMU".to_owned(),
            "product" => "Standard PC".to_owned(),
            // No serial, no asset tag: as most VMs.
            _ => String::new(),
        }
    }

    /// `text` with every `${name[:type]}` replaced.
    pub fn expand(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            match after.find('}') {
                Some(j) => {
                    out.push_str(&self.get(&after[..j]));
                    rest = &after[j + 1..];
                }
                None => {
                    out.push_str(&rest[i..]);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// What a script asks the machine to do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Fetch and run this script.
    Chain(String),
    /// Boot this kernel with these initrds and this command line.
    Boot {
        /// Kernel URL.
        kernel: String,
        /// Initrd URLs, in order.
        initrds: Vec<String>,
        /// The kernel's command line.
        cmdline: Vec<String>,
    },
    /// Anything else (exit to the local disk, a script with no boot).
    Other(String),
}

/// Reads a script the way the first successful path through it goes: the
/// first `chain`, or the `kernel`, `initrd`s and `imgargs` before `boot`.
pub fn read(script: &str, s: &Settings<'_>) -> Next {
    let mut kernel = None;
    let mut initrds = Vec::new();
    let mut cmdline = Vec::new();
    for line in script.lines() {
        // `cmd args && goto ok || …`: the command before any `&&` / `||`.
        let cmd = line.split(" && ").next().unwrap_or("");
        let cmd = cmd.split(" || ").next().unwrap_or("");
        let mut words = cmd.split_whitespace();
        let Some(verb) = words.next() else { continue };
        // Options (`--name x`, `--autofree`) come before the URL.
        let mut args: Vec<&str> = Vec::new();
        let mut skip_next = false;
        for w in words {
            if skip_next {
                skip_next = false;
            } else if w == "--name" || w == "-n" {
                skip_next = true;
            } else if !(args.is_empty() && w.starts_with("--")) {
                args.push(w);
            }
        }
        match verb {
            "chain" | "chainload" => {
                if let Some(url) = args.first() {
                    return Next::Chain(s.expand(url));
                }
            }
            "kernel" => {
                kernel = args.first().map(|u| s.expand(u));
                cmdline = args.iter().skip(1).map(|a| s.expand(a)).collect();
            }
            "initrd" => {
                if let Some(u) = args.first() {
                    initrds.push(s.expand(u));
                }
            }
            "imgargs" => {
                cmdline = args.iter().skip(1).map(|a| s.expand(a)).collect();
            }
            "boot" => break,
            "exit" | "sanboot" => return Next::Other(line.to_owned()),
            _ => {}
        }
    }
    match kernel {
        Some(kernel) => Next::Boot {
            kernel,
            initrds,
            cmdline,
        },
        None => Next::Other(String::from("no chain, no kernel")),
    }
}

/// The value of `key=` on a kernel command line.
pub fn arg<'a>(cmdline: &'a [String], key: &str) -> Option<&'a str> {
    cmdline
        .iter()
        .find_map(|a| a.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const S: Settings<'static> = Settings {
        mac: "52:54:01:00:00:0a",
        uuid: "00000000-0000-4000-8000-00000000000a",
        uefi: true,
    };

    #[test]
    fn follows_vaquero_s_chain_script() {
        let chain = vaquero_ipxe::chain_script("http://10.0.0.2:8080")
            .unwrap()
            .render();
        assert_eq!(
            read(&chain, &S),
            Next::Chain(
                "http://10.0.0.2:8080/ipxe?mac=52-54-01-00-00-0a&uuid=00000000-0000-4000-8000-00000000000a&serial=&arch=x86_64&platform=efi"
                    .into()
            )
        );
    }

    #[test]
    fn reads_a_host_script() {
        let mut s = vaquero_ipxe::Script::new();
        s.retries(5);
        s.kernel("kernel", "http://a/files/vmlinuz").unwrap();
        s.initrd("initrd0", "http://a/files/initrd.img").unwrap();
        s.imgargs(
            "kernel",
            "initrd=initrd0 quiet vaquero.config=http://a/config/x?boot=storm",
        )
        .unwrap();
        s.boot("kernel").unwrap();
        let Next::Boot {
            kernel,
            initrds,
            cmdline,
        } = read(&s.render(), &S)
        else {
            panic!("no boot")
        };
        assert_eq!(kernel, "http://a/files/vmlinuz");
        assert_eq!(initrds, ["http://a/files/initrd.img"]);
        assert_eq!(
            arg(&cmdline, "vaquero.config"),
            Some("http://a/config/x?boot=storm")
        );
        assert_eq!(arg(&cmdline, "initrd"), Some("initrd0"));
        assert_eq!(arg(&cmdline, "quiet"), None);
    }

    #[test]
    fn a_local_disk_script_is_not_a_boot() {
        let mut s = vaquero_ipxe::Script::new();
        s.local_disk();
        assert!(matches!(read(&s.render(), &S), Next::Other(_)));
    }

    #[test]
    fn expands_bios_settings_and_leaves_unclosed_text() {
        let b = Settings { uefi: false, ..S };
        assert_eq!(
            b.expand("${platform}/${buildarch}/${net0/mac}"),
            "pcbios/i386/52:54:01:00:00:0a"
        );
        assert_eq!(b.expand("a${b"), "a${b");
    }
}
