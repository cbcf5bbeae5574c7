//! Retention paths written the way a Python user names things: `__main__.KEEP`,
//! `app.cache.Cache.entries`, `<closure of app.make_store.store>.seen`, `mod.ROWS[3]`.
//! Reads the few names it needs (dict keys, function and variable names) from the target;
//! knows nothing of dominators or output formats.

use super::walker::{Graph, Label, NO_NODE};
use crate::attach::ReadMemory;
use crate::output::shorten_middle;
use crate::python::layout::Layout;
use crate::python::objects::{read_int, read_str};

/// The longest path followed up from an object before giving up on naming it.
const MAX_DEPTH: usize = 256;
/// The longest key shown in `[...]` (a longer one keeps both ends: `'/opt/app/li…/site-packages'`).
const MAX_KEY: usize = 40;

/// A retention path: its text, and the same path as steps, root first, the frames of a
/// flamegraph or pprof stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPath {
    /// `__main__.KEEP`.
    pub text: String,
    /// `["__main__", "__main__.KEEP"]`: the root, then the path up to each attribute, key
    /// or index (`mod.ROWS[3]`), set member (`{…}`) or closure variable (a closure starts
    /// over at `<closure of m.f>`). Each step is named by the whole path to it, so that two
    /// attributes of one name in different places stay apart (`go tool pprof -top` lists
    /// frames by name).
    pub steps: Vec<String>,
}

impl RetentionPath {
    fn new(text: &str) -> RetentionPath {
        RetentionPath {
            text: text.to_string(),
            steps: vec![text.to_string()],
        }
    }

    /// Appends `step`, written `separator` + `step` in the text.
    fn push(&mut self, separator: &str, step: String) {
        self.text.push_str(separator);
        self.text.push_str(&step);
        self.steps.push(self.text.clone());
    }
}

/// The retention path of `node`: its first (breadth-first) path from a root.
pub fn path_of(mem: &impl ReadMemory, layout: &Layout, graph: &Graph, node: u32) -> RetentionPath {
    let mut chain = Vec::new();
    let mut at = node;
    while at != 0 && at != NO_NODE && chain.len() < MAX_DEPTH {
        chain.push(at);
        at = graph.parent[at as usize];
    }
    if at != 0 {
        return RetentionPath::new("<not reached from a root>");
    }
    let mut path = RetentionPath::new("");
    let mut namespace = false;
    let mut closure_of: Option<u32> = None;
    for &n in chain.iter().rev() {
        let label = graph.label[n as usize];
        let parent = graph.parent[n as usize];
        match label {
            Label::Root(i) => {
                path = RetentionPath::new(
                    graph.roots.get(i as usize).map_or("?", |r| r.name.as_str()),
                );
            }
            Label::Namespace => {
                namespace = true;
                continue;
            }
            Label::Value(key) => {
                let key = key_text(mem, layout, key);
                if namespace {
                    path.push(".", key.trim_matches('\'').to_string());
                } else {
                    path.push("", format!("[{key}]"));
                }
            }
            Label::Attribute(key) => {
                let key = key_text(mem, layout, key);
                path.push(".", key.trim_matches('\'').to_string());
            }
            Label::Key => path.push(".", "<key>".to_string()),
            Label::Index(i) => match closure_of.take() {
                Some(function) => {
                    let name = free_variable(mem, layout, graph, function, i)
                        .unwrap_or_else(|| format!("<free variable {i}>"));
                    path = RetentionPath::new(&format!(
                        "<closure of {}>",
                        function_name(mem, layout, graph, function)
                    ));
                    path.push(".", name);
                }
                None => path.push("", format!("[{i}]")),
            },
            Label::Member => path.push("", "{…}".to_string()),
            Label::Closure => closure_of = Some(parent),
            Label::CellContents => {}
            Label::Attr(name) => path.push(".", name.to_string()),
            Label::Slot(i) => {
                let owner = graph.type_of[parent as usize];
                let name = graph
                    .types
                    .get(owner)
                    .slots
                    .get(i as usize)
                    .map_or("<slot>", |(_, name)| name.as_str());
                path.push(".", name.to_string());
            }
            Label::Class => path.push(".", "__class__".to_string()),
            Label::Local(name) => {
                let name = key_text(mem, layout, name);
                path.push(" local ", name.trim_matches('\'').to_string());
            }
        }
        namespace = false;
    }
    path
}

/// A dict key as written in Python: `'name'`, `42`, or `…`.
fn key_text(mem: &impl ReadMemory, layout: &Layout, key: u64) -> String {
    if let Ok(text) = read_str(mem, layout, key) {
        return format!("'{}'", shorten_middle(&text, MAX_KEY));
    }
    if let Ok(value) = read_int(mem, layout, key) {
        return value.to_string();
    }
    "…".to_string()
}

/// `module.qualname` of the function at `node`, without `.<locals>`.
fn function_name(mem: &impl ReadMemory, layout: &Layout, graph: &Graph, node: u32) -> String {
    let addr = graph.addrs[node as usize];
    let read = |at: u64| {
        mem.read_u64(addr.wrapping_add(at))
            .ok()
            .and_then(|s| read_str(mem, layout, s).ok())
    };
    let qualname = read(layout.func_qualname).unwrap_or_else(|| "?".to_string());
    let qualname = qualname.replace(".<locals>", "");
    match read(layout.func_module) {
        Some(module) => format!("{module}.{qualname}"),
        None => qualname,
    }
}

/// The name of free variable `index` of the function at `node` (the name its closure cell
/// has in the code).
fn free_variable(
    mem: &impl ReadMemory,
    layout: &Layout,
    graph: &Graph,
    node: u32,
    index: u32,
) -> Option<String> {
    let addr = graph.addrs[node as usize];
    let code = mem.read_u64(addr.wrapping_add(layout.func_code)).ok()?;
    let closure = mem.read_u64(addr.wrapping_add(layout.func_closure)).ok()?;
    let ncells = mem.read_u64(closure.wrapping_add(layout.var_size)).ok()?;
    let (names, position) = match layout.code_freevars {
        Some(at) => (mem.read_u64(code.wrapping_add(at)).ok()?, u64::from(index)),
        None => {
            // 3.11+: free variables are the last names of co_localsplusnames.
            let names = mem
                .read_u64(code.wrapping_add(layout.code_localnames))
                .ok()?;
            let count = mem.read_u64(names.wrapping_add(layout.var_size)).ok()?;
            (names, count.checked_sub(ncells)? + u64::from(index))
        }
    };
    let count = mem.read_u64(names.wrapping_add(layout.var_size)).ok()?;
    if position >= count || count > 1 << 16 {
        return None;
    }
    let name = mem
        .read_u64(names.wrapping_add(layout.tuple_items + 8 * position))
        .ok()?;
    read_str(mem, layout, name).ok()
}
