//! The Python children of a target sampled alone (without `--subprocesses`): a pre-fork
//! master or a pool whose workers do the work, which `pmt-sample` names as it starts and in
//! its summary, and `pmt top`'s view, with the option that samples them.
//!
//! Owns: finding those children and the line naming them. Must not touch: sampling.

use crate::attach::roles::{ProcessRole, role_of};
use crate::python::python_descendants;

/// The Python descendants of a target sampled alone (without `--subprocesses`), looked for
/// when the run starts and when it ends: in a pre-fork server or a pool they do the work the
/// summary does not show.
pub(super) struct UnsampledChildren {
    root: i32,
    /// `(pid, role)` in the order first seen; empty for a tree run.
    children: Vec<(i32, Option<ProcessRole>)>,
    tree: bool,
}

impl UnsampledChildren {
    pub(super) fn new(root: i32, tree: bool) -> UnsampledChildren {
        let mut unsampled = UnsampledChildren {
            root,
            children: Vec::new(),
            tree,
        };
        unsampled.look_again();
        unsampled
    }

    pub(super) fn look_again(&mut self) {
        if self.tree {
            return;
        }
        let mut found = python_descendants(self.root);
        found.sort_unstable();
        for (pid, _) in found {
            if !self.children.iter().any(|(p, _)| *p == pid) {
                self.children.push((pid, role_of(pid, self.root)));
            }
        }
    }

    /// One line naming them and the option that samples them, if there are any, as the
    /// run starts.
    pub(super) fn announce(&self) -> Option<String> {
        self.line("will not be sampled")
    }

    /// One line naming them and the option that samples them, if there are any, as the
    /// run ends.
    pub(super) fn describe(&self) -> Option<String> {
        self.line("were not sampled")
    }

    fn line(&self, verb: &str) -> Option<String> {
        if self.children.is_empty() {
            return None;
        }
        let named: Vec<String> = self
            .children
            .iter()
            .map(|(pid, role)| match role {
                Some(role) => format!("{pid} ({role})"),
                None => pid.to_string(),
            })
            .collect();
        Some(format!(
            "process {} has Python children that {verb}: {}; sample them too with --subprocesses",
            self.root,
            named.join(", ")
        ))
    }
}
