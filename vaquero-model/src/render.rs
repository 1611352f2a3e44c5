//! Templates (minijinja, strict undefined) and the checks of rendered
//! unattended configs.
//!
//! Every templated string of the SoT — assets, OS kernel/initrd/cmdline,
//! job fields — is compiled once into one environment. Strings without
//! template syntax are kept literal and never go through the engine.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use minijinja::{Environment, UndefinedBehavior, Value};

use crate::types::{AssetType, Boot, CmdlineValue, Job, Os};

/// A string that may be a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tpl {
    /// No template syntax: used as is.
    Literal(Arc<str>),
    /// The name of a template in the environment.
    Named(Arc<str>),
}

/// Whether a string uses template syntax.
pub(crate) fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// A template failed to compile or render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// The template's name: an asset path like `cloud-config/base.yml`, or
    /// `os:ID:kernel`-style names of inline templates.
    pub template: String,
    /// The failing template's own name (an included snippet, say).
    pub origin: String,
    /// Line in the failing template (1-based), when known.
    pub line: Option<usize>,
    /// Column (1-based), when known.
    pub column: Option<usize>,
    /// What went wrong.
    pub message: String,
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "template {}", self.origin)?;
        if let Some(l) = self.line {
            write!(f, " line {l}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for TemplateError {}

fn template_error(
    name: &str,
    source_of: &dyn Fn(&str) -> Option<Arc<str>>,
    e: &minijinja::Error,
) -> TemplateError {
    // An error inside an included snippet arrives wrapped in "could not
    // render include"; the snippet's own error says where it is.
    let mut e = e;
    while let Some(inner) =
        std::error::Error::source(e).and_then(|s| s.downcast_ref::<minijinja::Error>())
    {
        e = inner;
    }
    let origin = e.name().unwrap_or(name).to_owned();
    let column = e.range().and_then(|r| {
        let src = source_of(&origin)?;
        let before = src.get(..r.start)?;
        Some(before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1)
    });
    let mut message = e.kind().to_string();
    if let Some(d) = e.detail() {
        message = format!("{message}: {d}");
    }
    TemplateError {
        template: name.to_owned(),
        origin,
        line: e.line(),
        column,
        message,
    }
}

/// For "`md.timezon` is undefined": the closest key the context has
/// there, as " (did you mean `md.timezone`?)"; empty when none is close.
fn suggest_key(message: &str, ctx: &Value) -> String {
    let Some(path) = message
        .split_once('`')
        .and_then(|(_, rest)| rest.split_once("` is undefined"))
        .map(|(p, _)| p)
    else {
        return String::new();
    };
    let parent = path.rsplit_once('.').map(|(p, _)| p);
    let mut at = ctx.clone();
    for part in parent.into_iter().flat_map(|p| p.split('.')) {
        match at.get_attr(part) {
            Ok(v) if !v.is_undefined() => at = v,
            _ => return String::new(),
        }
    }
    let Ok(keys) = at.try_iter() else {
        return String::new();
    };
    // Compared as whole paths: the hint names what to write.
    let keys: Vec<String> = keys
        .filter_map(|k| {
            k.as_str()
                .map(|k| parent.map_or(k.to_owned(), |p| format!("{p}.{k}")))
        })
        .collect();
    crate::yaml::did_you_mean(path, keys.iter().map(String::as_str))
}

/// The first Go-template expression (`{{.host.name}}`, `{{ .md.rack }}`)
/// on `line` (1-based; any line when unknown), and the Jinja expression
/// that replaces it.
fn go_template(text: &str, line: Option<usize>) -> Option<(String, String)> {
    let lines: Vec<&str> = match line {
        Some(l) => text.lines().nth(l.checked_sub(1)?).into_iter().collect(),
        None => text.lines().collect(),
    };
    for l in lines {
        let mut rest = l;
        while let Some(i) = rest.find("{{") {
            let after = &rest[i + 2..];
            let Some(end) = after.find("}}") else { break };
            let inner = after[..end].trim_matches(|c: char| c == '-' || c.is_whitespace());
            if let Some(path) = inner.strip_prefix('.')
                && !path.is_empty()
                && path
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            {
                return Some((
                    rest[i..i + 2 + end + 2].to_owned(),
                    format!("{{{{ {path} }}}}"),
                ));
            }
            rest = &after[end + 2..];
        }
    }
    None
}

/// All templates of a SoT, compiled.
pub struct Renderer {
    env: Environment<'static>,
    sources: HashMap<String, Arc<str>>,
    os: HashMap<String, OsTemplates>,
    jobs: HashMap<String, BootJobTemplates>,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field("templates", &self.sources.len())
            .finish()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct OsTemplates {
    pub kernel: Tpl,
    pub initrd: Vec<Tpl>,
    /// (key, values): an empty list renders `key` alone.
    pub cmdline: Vec<(String, Vec<Tpl>)>,
}

#[derive(Debug, Clone)]
pub(crate) struct JobTemplates {
    /// The job as declared; its templated fields are rendered from the
    /// templates below.
    pub declared: Job,
    pub command: Vec<Tpl>,
    pub url: Option<Tpl>,
    pub env: Vec<(String, Tpl)>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct BootJobTemplates {
    pub before_shutdown: Vec<JobTemplates>,
    pub validate: Vec<JobTemplates>,
}

impl Renderer {
    /// Compiles every template; returns the renderer and the templates that
    /// failed to compile.
    pub(crate) fn build<'a>(
        os: impl IntoIterator<Item = &'a Os>,
        boots: impl IntoIterator<Item = &'a Boot>,
        assets: &BTreeMap<String, Arc<str>>,
    ) -> (Renderer, Vec<TemplateError>) {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Unattended configs are not HTML: what the operator writes is what
        // the installer gets (`| tojson` quotes explicitly where needed).
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        // Strict undefined does not stop a filter from receiving an
        // undefined value, and `tojson` would print `null`: a typo in a
        // variable name must fail validation, not ship `null` to a machine.
        env.add_filter(
            "tojson",
            |v: &Value, indent: Option<Value>, kwargs: minijinja::value::Kwargs| {
                if v.is_undefined() {
                    return Err(minijinja::Error::new(
                        minijinja::ErrorKind::UndefinedError,
                        "tojson was given an undefined value",
                    ));
                }
                minijinja::filters::tojson(v, indent, kwargs)
            },
        );
        if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
        {
            env.set_syntax(syntax);
        }
        // `{% include "snippets/x" %}` inside `kickstart/base.ks` means
        // `kickstart/snippets/x`: snippets are per asset type.
        env.set_path_join_callback(|name, parent| {
            match (name.starts_with("snippets/"), parent.split_once('/')) {
                (true, Some((kind, _))) => format!("{kind}/{name}").into(),
                _ => name.into(),
            }
        });
        let mut r = Renderer {
            env,
            sources: HashMap::new(),
            os: HashMap::new(),
            jobs: HashMap::new(),
        };
        let mut errors = Vec::new();
        for (name, text) in assets {
            r.add(name.clone(), text.clone(), &mut errors);
        }
        for o in os {
            let kernel = r.tpl(format!("os:{}:kernel", o.id), &o.boot.kernel, &mut errors);
            let initrd = o
                .boot
                .initrd
                .iter()
                .enumerate()
                .map(|(i, s)| r.tpl(format!("os:{}:initrd:{i}", o.id), s, &mut errors))
                .collect();
            let mut cmdline = Vec::new();
            for (i, entry) in o.cmdline.iter().enumerate() {
                for (k, v) in entry {
                    let vals: Vec<&String> = match v {
                        CmdlineValue::One(s) if s.is_empty() => vec![],
                        CmdlineValue::One(s) => vec![s],
                        CmdlineValue::Many(l) => l.iter().collect(),
                    };
                    let tpls = vals
                        .into_iter()
                        .enumerate()
                        .map(|(j, s)| r.tpl(format!("os:{}:cmdline:{i}:{j}", o.id), s, &mut errors))
                        .collect();
                    cmdline.push((k.clone(), tpls));
                }
            }
            r.os.insert(
                o.id.clone(),
                OsTemplates {
                    kernel,
                    initrd,
                    cmdline,
                },
            );
        }
        for b in boots {
            let mut jt = BootJobTemplates::default();
            for (list, out, what) in [
                (
                    &b.before_shutdown,
                    &mut jt.before_shutdown,
                    "before_shutdown",
                ),
                (&b.validate, &mut jt.validate, "validate"),
            ] {
                for (i, job) in list.iter().enumerate() {
                    out.push(r.job(&format!("boot:{}:{what}:{i}", b.id), job, &mut errors));
                }
            }
            r.jobs.insert(b.id.clone(), jt);
        }
        (r, errors)
    }

    fn job(&mut self, prefix: &str, job: &Job, errors: &mut Vec<TemplateError>) -> JobTemplates {
        JobTemplates {
            declared: job.clone(),
            command: job
                .command
                .iter()
                .enumerate()
                .map(|(j, s)| self.tpl(format!("{prefix}:command:{j}"), s, errors))
                .collect(),
            url: job
                .url
                .as_ref()
                .map(|u| self.tpl(format!("{prefix}:url"), u, errors)),
            env: job
                .env
                .iter()
                .map(|(k, v)| (k.clone(), self.tpl(format!("{prefix}:env:{k}"), v, errors)))
                .collect(),
        }
    }

    fn tpl(&mut self, name: String, text: &str, errors: &mut Vec<TemplateError>) -> Tpl {
        if is_template(text) {
            let name: Arc<str> = name.into();
            self.add(name.to_string(), text.into(), errors);
            Tpl::Named(name)
        } else {
            Tpl::Literal(text.into())
        }
    }

    fn add(&mut self, name: String, text: Arc<str>, errors: &mut Vec<TemplateError>) {
        if let Err(e) = self.env.add_template_owned(name.clone(), text.to_string()) {
            let src = text.clone();
            let mut err = template_error(&name, &|_| Some(src.clone()), &e);
            if let Some((go, jinja)) = go_template(&text, err.line) {
                err.message = format!(
                    "`{go}` is Go template syntax; templates are Jinja (minijinja): write `{jinja}`"
                );
            }
            errors.push(err);
        }
        self.sources.insert(name, text);
    }

    /// Renders an asset (`cloud-config/base.yml`) or inline template.
    pub fn render(&self, name: &str, ctx: &Value) -> Result<String, TemplateError> {
        let source_of = |n: &str| self.sources.get(n).cloned();
        let t = self
            .env
            .get_template(name)
            .map_err(|e| template_error(name, &source_of, &e))?;
        t.render(ctx).map_err(|e| {
            let mut err = template_error(name, &source_of, &e);
            err.message.push_str(&suggest_key(&err.message, ctx));
            err
        })
    }

    pub(crate) fn render_tpl(&self, t: &Tpl, ctx: &Value) -> Result<String, TemplateError> {
        match t {
            Tpl::Literal(s) => Ok(s.to_string()),
            Tpl::Named(n) => self.render(n, ctx),
        }
    }

    pub(crate) fn os(&self, id: &str) -> Option<&OsTemplates> {
        self.os.get(id)
    }

    /// The declared job with its templated fields (command, URL,
    /// environment) rendered.
    pub(crate) fn render_job(&self, t: &JobTemplates, ctx: &Value) -> Result<Job, TemplateError> {
        Ok(Job {
            command: t
                .command
                .iter()
                .map(|c| self.render_tpl(c, ctx))
                .collect::<Result<_, _>>()?,
            url: t
                .url
                .as_ref()
                .map(|u| self.render_tpl(u, ctx))
                .transpose()?,
            env: t
                .env
                .iter()
                .map(|(k, v)| Ok((k.clone(), self.render_tpl(v, ctx)?)))
                .collect::<Result<_, TemplateError>>()?,
            ..t.declared.clone()
        })
    }

    pub(crate) fn boot_jobs(&self, boot: &str) -> Option<&BootJobTemplates> {
        self.jobs.get(boot)
    }
}

/// Kickstart commands and section markers Anaconda knows (pykickstart).
const KICKSTART_COMMANDS: &[&str] = &[
    "auth",
    "authconfig",
    "authselect",
    "autopart",
    "autostep",
    "bootloader",
    "btrfs",
    "cdrom",
    "clearpart",
    "cmdline",
    "device",
    "deviceprobe",
    "dmraid",
    "driverdisk",
    "eula",
    "fcoe",
    "firewall",
    "firstboot",
    "graphical",
    "group",
    "halt",
    "harddrive",
    "hmc",
    "ignoredisk",
    "install",
    "interactive",
    "iscsi",
    "iscsiname",
    "keyboard",
    "lang",
    "langsupport",
    "liveimg",
    "logging",
    "logvol",
    "mediacheck",
    "method",
    "module",
    "monitor",
    "mount",
    "mouse",
    "multipath",
    "network",
    "nfs",
    "nvdimm",
    "ostreecontainer",
    "ostreesetup",
    "part",
    "partition",
    "poweroff",
    "raid",
    "realm",
    "reboot",
    "repo",
    "reqpart",
    "rescue",
    "rootpw",
    "selinux",
    "services",
    "shutdown",
    "skipx",
    "snapshot",
    "sshkey",
    "sshpw",
    "text",
    "timesource",
    "timezone",
    "updates",
    "upgrade",
    "url",
    "user",
    "vnc",
    "volgroup",
    "xconfig",
    "zerombr",
    "zfcp",
    "zipl",
    "%include",
    "%ksappend",
];

const KICKSTART_SECTIONS: &[&str] = &[
    "%packages",
    "%pre",
    "%pre-install",
    "%post",
    "%onerror",
    "%traceback",
    "%addon",
    "%anaconda",
    "%certificate",
];

/// A problem in a rendered unattended config: line (1-based) and message.
pub type FormatProblem = (usize, String);

/// Checks that a rendered unattended config is well-formed for its type.
pub fn check_unattended(kind: AssetType, text: &str) -> Result<(), FormatProblem> {
    match kind {
        AssetType::Untyped => Ok(()),
        AssetType::CloudConfig => {
            let first = text.lines().next().unwrap_or("");
            if first.trim_end() != "#cloud-config" {
                return Err((
                    1,
                    "a cloud-config must start with the line `#cloud-config`".into(),
                ));
            }
            match marked_yaml::parse_yaml(0, text) {
                Ok(_) => Ok(()),
                Err(marked_yaml::LoadError::TopLevelMustBeMapping(m)) => {
                    Err((m.line(), "a cloud-config must be a YAML mapping".into()))
                }
                Err(marked_yaml::LoadError::ScanError(m, e)) => Err((
                    m.line(),
                    format!("cloud-config is not valid YAML: {}", e.info()),
                )),
                Err(marked_yaml::LoadError::DuplicateKey(d)) => Err((
                    d.key.span().start().map_or(0, |m| m.line()),
                    format!("cloud-config has duplicate key `{}`", d.key.as_str()),
                )),
                // Anchors, tags and the like are valid cloud-config.
                Err(_) => Ok(()),
            }
        }
        AssetType::Ignition => {
            let v: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| (e.line(), format!("ignition config is not valid JSON: {e}")))?;
            match v.pointer("/ignition/version") {
                Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(()),
                _ => Err((1, "ignition config has no `ignition.version` string".into())),
            }
        }
        AssetType::Kickstart => {
            let mut in_section: Option<&str> = None;
            for (i, line) in text.lines().enumerate() {
                let t = line.trim();
                if t.is_empty() || t.starts_with('#') {
                    continue;
                }
                let word = t.split_whitespace().next().unwrap_or("");
                if let Some(sec) = in_section {
                    if word == "%end" {
                        in_section = None;
                    } else if KICKSTART_SECTIONS.contains(&word) {
                        return Err((
                            i + 1,
                            format!(
                                "kickstart section `{word}` opened inside `{sec}` (missing %end)"
                            ),
                        ));
                    }
                    continue;
                }
                if KICKSTART_SECTIONS.contains(&word) {
                    in_section = Some(word);
                } else if word == "%end" {
                    return Err((i + 1, "kickstart `%end` without an open section".into()));
                } else if !KICKSTART_COMMANDS.contains(&word) {
                    return Err((i + 1, format!("unknown kickstart command `{word}`")));
                }
            }
            match in_section {
                Some(sec) => Err((
                    text.lines().count(),
                    format!("kickstart section `{sec}` is not closed with %end"),
                )),
                None => Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unattended_checks() {
        assert!(check_unattended(AssetType::CloudConfig, "#cloud-config\na: 1\n").is_ok());
        assert_eq!(
            check_unattended(AssetType::CloudConfig, "a: 1\n")
                .unwrap_err()
                .0,
            1
        );
        assert!(
            check_unattended(AssetType::Ignition, r#"{"ignition":{"version":"3.4.0"}}"#).is_ok()
        );
        assert!(check_unattended(AssetType::Ignition, r#"{"ignition":{}}"#).is_err());
        assert!(
            check_unattended(
                AssetType::Kickstart,
                "text\n%packages\n@core\n%end\nreboot\n"
            )
            .is_ok()
        );
        assert_eq!(
            check_unattended(AssetType::Kickstart, "text\nfrobnicate\n").unwrap_err(),
            (2, "unknown kickstart command `frobnicate`".into())
        );
        assert!(check_unattended(AssetType::Kickstart, "%post\nx\n").is_err());
    }
}
