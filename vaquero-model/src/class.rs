//! Reclass-style class inheritance on YAML trees.
//!
//! A host's effective tree is its classes resolved depth-first in order
//! (each class: its parents first, then itself), later over earlier, the
//! host itself last. Maps merge deeply, lists append, scalars replace; a key
//! written `~key` replaces instead of merging. Merging trees (not typed
//! values) keeps every value's source span, so an error in a value a class
//! supplied points into that class's file.

use std::collections::{BTreeMap, HashMap};

use marked_yaml::Node;
use marked_yaml::types::MarkedScalarNode;

use crate::diag::Diagnostics;
use crate::yaml::SourceMap;

/// Merges `over` onto `base` by the rules above.
pub(crate) fn merge(base: &mut Node, over: &Node) {
    match (base, over) {
        (Node::Mapping(b), Node::Mapping(o)) => {
            for (k, v) in o.iter() {
                let key = k.as_str();
                if let Some(plain) = key.strip_prefix('~') {
                    let mut nk: MarkedScalarNode = MarkedScalarNode::new(*k.span(), plain);
                    nk.set_coerce(k.may_coerce());
                    b.remove(plain);
                    b.insert(nk, strip_tildes(v.clone()));
                } else if let Some(existing) = b.get_mut(key) {
                    merge(existing, v);
                } else {
                    b.insert(k.clone(), strip_tildes(v.clone()));
                }
            }
        }
        (Node::Sequence(b), Node::Sequence(o)) => {
            b.extend(o.iter().cloned().map(strip_tildes));
        }
        (b, o) => *b = strip_tildes(o.clone()),
    }
}

/// `~key` only means something while merging; afterwards it is just `key`.
fn strip_tildes(node: Node) -> Node {
    match node {
        Node::Mapping(mut m) => {
            let has = m.keys().any(|k| k.as_str().starts_with('~'));
            if has {
                let entries: Vec<_> = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                m.clear();
                for (k, v) in entries {
                    let key = k.as_str().trim_start_matches('~').to_owned();
                    let mut nk = MarkedScalarNode::new(*k.span(), key);
                    nk.set_coerce(k.may_coerce());
                    m.insert(nk, strip_tildes(v));
                }
            } else {
                for v in m.values_mut() {
                    let taken = std::mem::replace(v, Node::from(""));
                    *v = strip_tildes(taken);
                }
            }
            Node::Mapping(m)
        }
        Node::Sequence(mut s) => {
            for v in s.iter_mut() {
                let taken = std::mem::replace(v, Node::from(""));
                *v = strip_tildes(taken);
            }
            Node::Sequence(s)
        }
        n => n,
    }
}

/// The class id of a file under `classes/`: `classes/rack/a.yml` → `rack.a`.
pub(crate) fn class_id(path: &str) -> Option<String> {
    let rel = path.strip_prefix("classes/")?;
    let stem = rel
        .strip_suffix(".yml")
        .or_else(|| rel.strip_suffix(".yaml"))?;
    Some(stem.replace('/', "."))
}

/// The list of class names a node declares (`classes:`), with their nodes.
pub(crate) fn declared_classes(node: &Node) -> Vec<(String, Node)> {
    node.as_mapping()
        .and_then(|m| m.get_sequence("classes"))
        .map(|s| {
            s.iter()
                .filter_map(|n| n.as_scalar().map(|c| (c.as_str().to_owned(), n.clone())))
                .collect()
        })
        .unwrap_or_default()
}

/// Resolves classes to their effective trees (parents merged in), once each.
pub(crate) struct ClassResolver<'a> {
    raw: &'a BTreeMap<String, Node>,
    done: HashMap<String, Option<Node>>,
}

impl<'a> ClassResolver<'a> {
    pub fn new(raw: &'a BTreeMap<String, Node>) -> Self {
        ClassResolver {
            raw,
            done: HashMap::new(),
        }
    }

    /// Checks every class: parents exist and there is no cycle.
    pub fn check_all(&mut self, map: &SourceMap, diags: &mut Diagnostics) {
        for id in self.raw.keys() {
            let mut stack = Vec::new();
            self.resolve(id, &mut stack, map, diags);
        }
    }

    /// Every class id.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.raw.keys().map(String::as_str)
    }

    /// Whether a class of that id exists (broken or not).
    pub fn exists(&self, id: &str) -> bool {
        self.raw.contains_key(id)
    }

    /// The effective tree of a class checked by [`Self::check_all`].
    pub fn get(&self, id: &str) -> Option<&Node> {
        self.done.get(id)?.as_ref()
    }

    /// The effective tree of class `id` (without its `classes` key), or
    /// `None` when it is unknown or broken (already reported).
    pub fn resolve(
        &mut self,
        id: &str,
        stack: &mut Vec<String>,
        map: &SourceMap,
        diags: &mut Diagnostics,
    ) -> Option<Node> {
        if let Some(done) = self.done.get(id) {
            return done.clone();
        }
        let raw = self.raw.get(id)?;
        stack.push(id.to_owned());
        let mut eff = crate::yaml::empty_mapping(*raw.span());
        let mut ok = true;
        for (i, (parent, pnode)) in declared_classes(raw).into_iter().enumerate() {
            let path = format!("classes[{i}]");
            if let Some(pos) = stack.iter().position(|s| *s == parent) {
                let mut cycle: Vec<&str> = stack[pos..].iter().map(|s| s.as_str()).collect();
                cycle.push(&parent);
                diags.push(map.diag(
                    pnode.span(),
                    &path,
                    format!("class cycle: {}", cycle.join(" → ")),
                ));
                ok = false;
                continue;
            }
            if !self.raw.contains_key(&parent) {
                let hint = crate::yaml::did_you_mean(&parent, self.raw.keys().map(String::as_str));
                diags.push(map.diag(
                    pnode.span(),
                    &path,
                    format!("unknown class `{parent}`{hint}"),
                ));
                ok = false;
                continue;
            }
            match self.resolve(&parent, stack, map, diags) {
                Some(p) => merge(&mut eff, &p),
                None => ok = false,
            }
        }
        let mut own = raw.clone();
        crate::yaml::take_key(&mut own, "classes");
        merge(&mut eff, &own);
        stack.pop();
        let result = ok.then_some(eff);
        self.done.insert(id.to_owned(), result.clone());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn y(s: &str) -> Node {
        crate::yaml::parse_str(0, s).unwrap()
    }

    #[test]
    fn merge_rules() {
        let mut base = y("a: 1\nm: {x: 1, y: 2}\nl: [1, 2]\nr: [1]\n");
        merge(&mut base, &y("a: 2\nm: {y: 3, z: 4}\nl: [3]\n~r: [9]\n"));
        let v = crate::yaml::to_json(&base);
        assert_eq!(
            v,
            serde_json::json!({"a": 2, "m": {"x": 1, "y": 3, "z": 4}, "l": [1, 2, 3], "r": [9]})
        );
    }

    #[test]
    fn class_ids() {
        assert_eq!(class_id("classes/rack/a.yml").as_deref(), Some("rack.a"));
        assert_eq!(class_id("classes/base.yaml").as_deref(), Some("base"));
        assert_eq!(class_id("os/x.yml"), None);
    }
}
