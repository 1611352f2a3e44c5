//! YAML with source positions: documents, spans, diagnostics.
//!
//! Every YAML document gets a *source id* (a `marked_yaml` marker source);
//! [`SourceMap`] maps it back to its file and the line the document starts
//! on, so any node — also one merged from a class into a host — can be
//! reported as `file:line:col`.

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoaderOptions, Marker, Node, Span};
use serde::de::DeserializeOwned;

use crate::diag::{Diagnostic, Diagnostics};

/// Where a document came from.
#[derive(Debug, Clone)]
struct DocOrigin {
    file: std::sync::Arc<str>,
    /// Lines before the document's first line in its file.
    line_offset: usize,
}

/// Maps marker sources back to files and absolute lines.
#[derive(Debug, Default, Clone)]
pub(crate) struct SourceMap {
    docs: Vec<DocOrigin>,
}

/// A position in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pos {
    pub file: std::sync::Arc<str>,
    pub line: usize,
    pub column: usize,
}

impl SourceMap {
    fn add(&mut self, file: &std::sync::Arc<str>, line_offset: usize) -> usize {
        self.docs.push(DocOrigin {
            file: file.clone(),
            line_offset,
        });
        self.docs.len() - 1
    }

    /// The file of a document.
    pub fn file(&self, source: usize) -> Option<&str> {
        self.docs.get(source).map(|d| &*d.file)
    }

    /// The file and absolute position of a marker.
    pub fn pos(&self, m: &Marker) -> Option<Pos> {
        let d = self.docs.get(m.source())?;
        Some(Pos {
            file: d.file.clone(),
            line: d.line_offset + m.line(),
            column: m.column(),
        })
    }

    /// A diagnostic at `span` (or at the start of the document's file).
    pub fn diag(&self, span: &Span, path: &str, message: impl Into<String>) -> Diagnostic {
        match span.start().and_then(|m| self.pos(m)) {
            Some(p) => Diagnostic::error(&p.file, p.line, p.column, path, message),
            None => Diagnostic::error("<unknown>", 0, 0, path, message),
        }
    }
}

/// One parsed YAML document.
pub(crate) struct Doc {
    pub node: Node,
}

/// Splits `text` into YAML documents at `---` lines; returns each document's
/// text and its line offset. Blank (comment-only) documents are dropped.
fn split_documents(text: &str) -> Vec<(String, usize)> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    let mut start = 0;
    for (i, line) in text.lines().enumerate() {
        let is_marker = line == "---"
            || line.starts_with("--- ")
            || line.starts_with("---\t")
            || line.starts_with("--- #");
        if is_marker && i > 0 {
            docs.push((std::mem::take(&mut cur), start));
            start = i;
        }
        cur.push_str(line);
        cur.push('\n');
    }
    docs.push((cur, start));
    docs.retain(|(d, _)| {
        d.lines().any(|l| {
            let t = l.trim();
            !(t.is_empty() || t.starts_with('#') || t == "---" || t == "...")
        })
    });
    docs
}

/// Parses every document of a file, reporting syntax errors.
pub(crate) fn parse_file(
    map: &mut SourceMap,
    file: &std::sync::Arc<str>,
    text: &str,
    diags: &mut Diagnostics,
) -> Vec<Doc> {
    let docs = map.prepare_file(file, text);
    let mut out = Vec::with_capacity(docs.len());
    for (source, doc) in docs {
        match map.parse_doc(source, &doc) {
            Ok(node) => out.push(Doc { node }),
            Err(d) => diags.push(d),
        }
    }
    out
}

impl SourceMap {
    /// Splits a file into documents and gives each its source id; parsing
    /// them ([`Self::parse_doc`]) can then happen in any order or thread.
    pub fn prepare_file(&mut self, file: &std::sync::Arc<str>, text: &str) -> Vec<(usize, String)> {
        split_documents(text)
            .into_iter()
            .map(|(doc, offset)| (self.add(file, offset), doc))
            .collect()
    }

    /// Parses one prepared document.
    pub fn parse_doc(&self, source: usize, text: &str) -> Result<Node, Diagnostic> {
        parse_str(source, text).map_err(|e| load_error(self, e))
    }
}

/// Parses one YAML document the way every SoT file is parsed: duplicate
/// keys are errors, and quoted scalars stay strings.
pub(crate) fn parse_str(source: usize, text: &str) -> Result<Node, marked_yaml::LoadError> {
    let opts = LoaderOptions::default()
        .error_on_duplicate_keys(true)
        .prevent_coercion(true);
    marked_yaml::parse_yaml_with_options(source, text, opts)
}

fn load_error(map: &SourceMap, e: marked_yaml::LoadError) -> Diagnostic {
    use marked_yaml::LoadError as L;
    let (marker, msg) = match &e {
        L::TopLevelMustBeMapping(m) => {
            (*m, "a document must be a mapping of keys to values".into())
        }
        L::TopLevelMustBeSequence(m) => (*m, "a document must be a sequence".into()),
        L::UnexpectedAnchor(m) => (*m, "YAML anchors and aliases are not supported".into()),
        L::MappingKeyMustBeScalar(m) => (*m, "mapping keys must be plain strings".into()),
        L::UnexpectedTag(m) => (*m, "YAML tags are not supported".into()),
        L::ScanError(m, se) => (*m, format!("YAML syntax error: {}", se.info())),
        L::DuplicateKey(inner) => (
            *inner.key.span().start().unwrap_or(&Marker::new(0, 0, 0, 0)),
            format!("duplicate key `{}`", inner.key.as_str()),
        ),
    };
    let span = Span::new_start(marker);
    map.diag(&span, "", msg)
}

/// Deserializes `node` into `T`, reporting **every** structural error of the
/// document: after each error the offending key is removed and the
/// deserialization retried, so one typo does not hide the next.
pub(crate) fn deserialize_all<T: DeserializeOwned>(
    map: &SourceMap,
    node: &Node,
    prefix: &str,
    diags: &mut Diagnostics,
) -> Option<T> {
    let mut work: Option<Node> = None;
    let mut pruned: Vec<String> = Vec::new();
    let mut suggested: Vec<&'static str> = Vec::new();
    for _ in 0..64 {
        let current = work.as_ref().unwrap_or(node);
        let err = match marked_yaml::from_node::<T>(current) {
            Ok(v) => return if pruned.is_empty() { Some(v) } else { None },
            Err(e) => e,
        };
        let path = join_path(prefix, err.path().unwrap_or(""));
        let inner: &marked_yaml::Error = &err;
        let message = serde_message(inner);
        if let marked_yaml::Error::UnknownFieldError(field, expected, _) = inner {
            suggested.extend(closest(field, expected));
        }
        // A missing field we caused by pruning, or that a typo's suggestion
        // already names, is not news.
        let missing = message.starts_with("missing field");
        if missing
            && suggested
                .iter()
                .any(|f| message.contains(&format!("`{f}`")))
        {
            return None;
        }
        if pruned.iter().any(|p| message.contains(&format!("`{p}`")))
            && message.starts_with("missing field")
        {
            return None;
        }
        // serde's "missing field" points at the mapping; its first key is
        // where a reader looks.
        let mut span = match inner.start_mark() {
            Some(m) => Span::new_start(m),
            None => *current.span(),
        };
        if message.starts_with("missing field") {
            let rel = err.path().unwrap_or("").trim_start_matches('.');
            let at = if rel.is_empty() {
                Some(current)
            } else {
                node_at(current, rel)
            };
            if let Some(k) = at
                .and_then(|n| n.as_mapping())
                .and_then(|m| m.keys().next())
            {
                span = *k.span();
            }
        }
        diags.push(map.diag(&span, &path, message));
        let mark = inner.start_mark()?;
        let mut next = current.clone();
        match prune(&mut next, &mark) {
            Some(key) => pruned.push(key),
            None => return None,
        }
        work = Some(next);
    }
    None
}

fn serde_message(e: &marked_yaml::Error) -> String {
    use marked_yaml::Error as E;
    match e {
        E::UnknownFieldError(field, expected, _) => {
            let mut s = format!("unknown field `{field}`");
            if let Some(best) = closest(field, expected) {
                s.push_str(&format!(" (did you mean `{best}`?)"));
            } else if !expected.is_empty() {
                s.push_str(&format!(", expected one of: {}", expected.join(", ")));
            }
            s
        }
        E::NotBoolean(_) => "expected true or false".into(),
        E::IntegerParseFailure(pe, _) => format!("expected a number ({pe})"),
        E::FloatParseFailure(pe, _) => format!("expected a number ({pe})"),
        E::Other(m, _) => tidy_serde_message(m),
    }
}

/// serde's messages name Rust types; say what the operator wrote instead.
fn tidy_serde_message(m: &str) -> String {
    if let Some(rest) = m.strip_prefix("unknown variant ") {
        return format!("unknown value {rest}");
    }
    if m.starts_with("data did not match any variant of untagged enum OneOrMany") {
        return "expected a string or a list of strings".into();
    }
    if m.starts_with("data did not match any variant of untagged enum CmdlineValue") {
        return "expected a string or a list of strings".into();
    }
    m.replace("invalid type: map", "expected a scalar, found a mapping")
}

/// ` (did you mean `x`?)` for the known name closest to a mistyped
/// reference (case aside, edit distance ≤ 2 and less than the name's
/// length), or nothing.
pub(crate) fn did_you_mean<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    let lower = name.to_lowercase();
    let scored: Vec<(usize, &str)> = known
        .into_iter()
        .map(|k| (levenshtein(&lower, &k.to_lowercase()), k))
        .filter(|(d, _)| *d <= 2 && *d < name.chars().count())
        .collect();
    let Some(best) = scored.iter().map(|(d, _)| *d).min() else {
        return String::new();
    };
    let mut names: Vec<&str> = scored
        .iter()
        .filter(|(d, _)| *d == best)
        .map(|(_, k)| *k)
        .collect();
    names.sort_unstable();
    match names.as_slice() {
        [one] => format!(" (did you mean `{one}`?)"),
        [a, b] => format!(" (did you mean `{a}` or `{b}`?)"),
        _ => String::new(),
    }
}

/// The expected name closest to a typo (edit distance ≤ 2).
fn closest<'a>(field: &str, expected: &'a [&'a str]) -> Option<&'a str> {
    expected
        .iter()
        .map(|e| (levenshtein(field, e), *e))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, e)| e)
}

pub(crate) fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Removes the mapping entry (or sequence element) at `mark`; returns its key.
fn prune(node: &mut Node, mark: &Marker) -> Option<String> {
    match node {
        Node::Mapping(m) => {
            let hit = m
                .iter()
                .find(|(k, v)| k.span().start() == Some(mark) || v.span().start() == Some(mark))
                .map(|(k, _)| k.clone());
            if let Some(k) = hit {
                m.remove(&k);
                return Some(k.as_str().to_owned());
            }
            m.values_mut().find_map(|v| prune(v, mark))
        }
        Node::Sequence(s) => {
            if let Some(i) = s.iter().position(|v| v.span().start() == Some(mark)) {
                s.remove(i);
                return Some(format!("[{i}]"));
            }
            s.iter_mut().find_map(|v| prune(v, mark))
        }
        Node::Scalar(_) => None,
    }
}

pub(crate) fn join_path(prefix: &str, rest: &str) -> String {
    match (prefix.is_empty(), rest.is_empty() || rest == ".") {
        (true, _) => rest.trim_start_matches('.').to_owned(),
        (false, true) => prefix.to_owned(),
        (false, false) if rest.starts_with('[') => format!("{prefix}{rest}"),
        (false, false) => format!("{prefix}.{rest}"),
    }
}

/// The node at a dotted key path like `interfaces[1].mac`.
pub(crate) fn node_at<'a>(node: &'a Node, path: &str) -> Option<&'a Node> {
    let mut cur = node;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, idx) = match part.find('[') {
            Some(b) => (&part[..b], Some(&part[b..])),
            None => (part, None),
        };
        if !key.is_empty() {
            cur = cur.as_mapping()?.get_node(key)?;
        }
        if let Some(idx) = idx {
            for i in idx.split(']').filter(|s| !s.is_empty()) {
                let i: usize = i.trim_start_matches('[').parse().ok()?;
                cur = cur.as_sequence()?.get_node(i)?;
            }
        }
    }
    Some(cur)
}

/// The span of the deepest node on `path` that exists.
pub(crate) fn span_at(node: &Node, path: &str) -> Span {
    let mut best = *node.span();
    let mut acc = String::new();
    for part in path.split('.') {
        if !acc.is_empty() {
            acc.push('.');
        }
        acc.push_str(part);
        match node_at(node, &acc) {
            Some(n) => best = *n.span(),
            None => break,
        }
    }
    best
}

/// A YAML value with YAML's scalar typing (`true`, `3`, `1.5`, `null`
/// unquoted; quoted scalars stay strings).
pub(crate) fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value;
    match node {
        Node::Scalar(s) => scalar_json(s),
        Node::Sequence(s) => Value::Array(s.iter().map(to_json).collect()),
        Node::Mapping(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.as_str().to_owned(), to_json(v)))
                .collect(),
        ),
    }
}

fn scalar_json(s: &MarkedScalarNode) -> serde_json::Value {
    use serde_json::Value;
    let t = s.as_str();
    if !s.may_coerce() {
        return Value::String(t.to_owned());
    }
    if let Some(b) = s.as_bool() {
        return Value::Bool(b);
    }
    if matches!(t, "" | "~" | "null" | "Null" | "NULL") {
        return Value::Null;
    }
    if let Ok(i) = t.parse::<i64>() {
        return Value::from(i);
    }
    let numeric_start = t
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'-' || b == b'+');
    let float = (numeric_start && t.contains(['.', 'e', 'E']))
        .then(|| t.parse::<f64>().ok())
        .flatten()
        .filter(|f| f.is_finite());
    if let Some(f) = float {
        return Value::from(f);
    }
    Value::String(t.to_owned())
}

/// Removes `key` from a mapping node and returns its value.
pub(crate) fn take_key(node: &mut Node, key: &str) -> Option<Node> {
    node.as_mapping_mut()?.remove(key)
}

/// Reads (and removes) a metadata mapping from `node`, reporting a non-map.
pub(crate) fn take_metadata(
    map: &SourceMap,
    node: &mut Node,
    path: &str,
    diags: &mut Diagnostics,
) -> crate::types::Metadata {
    take_map(map, node, "metadata", path, diags)
}

/// Reads (and removes) the free-form mapping under `key` of `node` (YAML's
/// scalar typing kept), reporting a non-map.
pub(crate) fn take_map(
    map: &SourceMap,
    node: &mut Node,
    key: &str,
    path: &str,
    diags: &mut Diagnostics,
) -> crate::types::Metadata {
    let Some(md) = take_key(node, key) else {
        return Default::default();
    };
    match to_json(&md) {
        serde_json::Value::Object(o) => o,
        serde_json::Value::Null => Default::default(),
        _ => {
            diags.push(map.diag(
                md.span(),
                &join_path(path, key),
                format!("{key} must be a mapping"),
            ));
            Default::default()
        }
    }
}

/// Reads (and removes) the `params` of each `interfaces[i].bmc` of a host
/// document, by interface index.
pub(crate) fn take_bmc_params(
    map: &SourceMap,
    node: &mut Node,
    diags: &mut Diagnostics,
) -> Vec<(usize, crate::types::Metadata)> {
    let Some(ifaces) = node
        .as_mapping_mut()
        .and_then(|m| m.get_mut("interfaces"))
        .and_then(|n| n.as_sequence_mut())
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, n) in ifaces.iter_mut().enumerate() {
        if let Some(bmc) = n.as_mapping_mut().and_then(|m| m.get_mut("bmc"))
            && bmc.as_mapping().is_some_and(|m| m.get("params").is_some())
        {
            let path = format!("interfaces[{i}].bmc");
            out.push((i, take_map(map, bmc, "params", &path, diags)));
        }
    }
    out
}

/// An empty mapping node at `span`.
pub(crate) fn empty_mapping(span: Span) -> Node {
    Node::Mapping(MarkedMappingNode::new_empty(span))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_with_offsets() {
        let d = split_documents("# c\n---\na: 1\n---\n# only comment\n---\nb: 2\n");
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].1, 1);
        assert_eq!(d[1].1, 5);
    }

    #[test]
    fn scalar_typing() {
        let n = parse_str(0, "a: true\nb: \"true\"\nc: 3\nd: 1.5\ne: x\nf: ~\n").unwrap();
        let v = to_json(&n);
        assert_eq!(v["a"], serde_json::json!(true));
        assert_eq!(v["b"], serde_json::json!("true"));
        assert_eq!(v["c"], serde_json::json!(3));
        assert_eq!(v["d"], serde_json::json!(1.5));
        assert_eq!(v["e"], serde_json::json!("x"));
        assert_eq!(v["f"], serde_json::Value::Null);
    }

    #[test]
    fn typo_suggestion() {
        assert_eq!(closest("workflw", &["workflow", "name"]), Some("workflow"));
        assert_eq!(closest("zzz", &["workflow"]), None);
    }
}
