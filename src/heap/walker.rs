//! The object walker: finds every object the collector tracks (its generation lists) and every
//! object reachable from the roots (`sys.modules`' modules, threads' frame locals), following
//! references by per-type knowledge ([`Kind`]); builds the object graph with the label of
//! each reference (a dict key, a list index, a slot name) for retention paths. Everything read
//! is bounded and checked: a garbage pointer, a torn list or an object freed under the reader
//! is counted and skipped, never followed blindly. It computes no dominators and formats
//! nothing.

use super::types::{Kind, TypeInfo, TypeTable, flags};
use crate::attach::{MemoryError, ReadMemory};
use crate::python::frames::STACKREF_TAG_BITS;
use crate::python::layout::Layout;
use crate::python::locals::{LocalSlot, decode_slot};
use crate::python::objects::{
    DecodeError, dict_values_header, field_u8, field_u32, field_u64, keys_items_bounded,
};
use rustc_hash::{FxHashMap as HashMap, FxHashSet};
use std::collections::VecDeque;

/// The most objects one snapshot holds (beyond this the walk stops and says so).
pub const MAX_OBJECTS: usize = 100_000_000;
/// The longest list, tuple, set, dict or deque the walker reads whole.
const MAX_ITEMS: u64 = 1 << 27;
/// Objects and out-of-line arrays larger than this are checked to end in readable memory.
const LARGE_OBJECT: u64 = 1 << 20;
/// The most items a variable-size object's `ob_size` may claim for its shallow size.
const MAX_VAR_ITEMS: u64 = 1 << 24;
/// How many times a collector list that changed while read is read again.
const GC_LIST_TRIES: usize = 5;
/// The longest list of the collector the walker follows.
const MAX_GC_LIST: usize = MAX_OBJECTS;
/// `NEXT_MASK_UNREACHABLE` and other flag bits the collector keeps in a list pointer while
/// collecting (3.8+).
const GC_POINTER_FLAGS: u64 = 3;
/// Bytes read at each object's start: `ob_refcnt`, `ob_type`, `ob_size` (or `lv_tag`), and
/// `str`'s length and state.
const HEADER: usize = 40;
/// The most local slots (or stack entries) one frame's code may claim.
const MAX_FRAME_SLOTS: u64 = 1 << 16;
/// 3.11–3.14 `gi_frame_state`: from `FRAME_COMPLETED` on (then `FRAME_CLEARED`, 4) a
/// generator's frame holds no locals; below it, created, suspended or executing.
const FRAME_COMPLETED_3_11_TO_3_14: i8 = 1;
/// 3.15+ `gi_frame_state`: `FRAME_CLEARED`, its only finished state (`FRAME_COMPLETED` is gone).
const FRAME_CLEARED_FROM_3_15: i8 = 5;
/// `_PyInterpreterFrame.owner` of a frame a frame object owns (3.11–3.15): copied into the
/// object when its call returned while the object was still referenced.
const FRAME_OWNED_BY_FRAME_OBJECT: u8 = 2;
/// No node (the synthetic root's parent, an object not reached from a root).
pub const NO_NODE: u32 = u32::MAX;

/// How a reference is named on a retention path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    /// From the synthetic root: root number `n` of [`Graph::roots`].
    Root(u32),
    /// A module's, class's, function's or instance's `__dict__`: its values are attributes.
    Namespace,
    /// A dict value, by the address of its key object.
    Value(u64),
    /// A dict key.
    Key,
    /// An instance attribute kept in the object's own (3.11+ inline or split) values, not
    /// in a `__dict__` object, by the address of its name.
    Attribute(u64),
    /// Item `n` of a list, tuple or deque.
    Index(u32),
    /// A member of a set.
    Member,
    /// A function's `__closure__` tuple.
    Closure,
    /// A cell's contents.
    CellContents,
    /// A named attribute that is not in a `__dict__` (`__self__`, `__code__`, …).
    Attr(&'static str),
    /// `__slots__` member `n` of the object's type ([`TypeInfo::slots`]).
    Slot(u32),
    /// An instance's class.
    Class,
    /// A local variable of a generator's or frame object's frame, by the address of its
    /// name (a `str`).
    Local(u64),
}

/// One root of the object graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    /// How a user names it: `__main__` (a module), `thread main: handler() local rows`.
    pub name: String,
    /// The object.
    pub addr: u64,
}

/// What the walker could not follow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unfollowed {
    /// References to something that is not a readable object (garbage, freed, torn).
    pub bad_references: u64,
    /// Containers whose contents could not be read (too long, unreadable, torn).
    pub unreadable_containers: u64,
    /// Objects of types whose references pmt does not know, by type index.
    pub by_type: HashMap<u32, u64>,
    /// Instances whose `__dict__` at a negative `tp_dictoffset` could not be placed.
    pub instance_dicts: u64,
    /// Collector lists that did not lead back to their head within bounds.
    pub torn_gc_lists: u64,
    /// Whether the walk stopped at [`MAX_OBJECTS`].
    pub truncated: bool,
}

/// The object graph of one snapshot. Node 0 is a synthetic root referencing every [`Root`].
#[derive(Debug, Default)]
pub struct Graph {
    /// Each node's object address (0 for the synthetic root).
    pub addrs: Vec<u64>,
    /// Each node's type index in [`Graph::types`] ([`NO_NODE`] for the root).
    pub type_of: Vec<u32>,
    /// Each node's shallow size in bytes (`sys.getsizeof`'s rules, approximated).
    pub shallow: Vec<u64>,
    /// Each container node's item count (`len()`), else 0.
    pub items: Vec<u64>,
    /// Whether the node was found on one of the collector's lists.
    pub tracked: Vec<bool>,
    /// The node that first reached it from the roots, breadth first ([`NO_NODE`]: none).
    pub parent: Vec<u32>,
    /// The label of that reference.
    pub label: Vec<Label>,
    /// Every reference, as `(from, to)` node pairs.
    pub edges: Vec<(u32, u32)>,
    /// The roots, in [`Label::Root`] order.
    pub roots: Vec<Root>,
    /// The types met.
    pub types: TypeTable,
    /// What was not followed.
    pub unfollowed: Unfollowed,
}

impl Graph {
    /// How many nodes (objects plus the synthetic root).
    pub fn len(&self) -> usize {
        self.addrs.len()
    }
}

/// Where the collector's lists of one interpreter are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcLists {
    /// Address of each generation's list head (`PyGC_Head`): what `gc.get_objects()` walks.
    pub generations: Vec<u64>,
    /// The permanent generation's list head (3.7+: objects `gc.freeze()` set aside).
    pub permanent: Option<u64>,
}

/// How far into the collector's state its first list may be.
const MAX_GENERATIONS_OFFSET: u64 = 4096;

impl GcLists {
    /// The lists of the interpreter at `interp` (`runtime` is `_PyRuntime`, for 3.7–3.8;
    /// `generation0` is the `_PyGC_generation0` variable, for 3.6).
    pub fn locate(
        mem: &impl ReadMemory,
        layout: &Layout,
        interp: u64,
        runtime: Option<u64>,
        generation0: Option<u64>,
    ) -> Result<GcLists, DecodeError> {
        let state = match (layout.interp_gc, layout.runtime_gc, runtime) {
            (Some(at), _, _) => Some(interp.wrapping_add(at)),
            (None, Some(at), Some(runtime)) => Some(runtime.wrapping_add(at)),
            _ => None,
        };
        let step = layout.gc_generation_size;
        match (state, layout.gcstate_generations, generation0) {
            (Some(state), Some(generations), _) => {
                // Where the state says its first list is, when it says so (3.7–3.13).
                let pointed = match layout.gcstate_generation0 {
                    Some(at) => Some(mem.read_u64(state.wrapping_add(at))?),
                    None => None,
                };
                let first = match pointed {
                    Some(p) if p >= state && p - state < MAX_GENERATIONS_OFFSET => p,
                    _ => state.wrapping_add(generations),
                };
                Ok(GcLists {
                    generations: (0..3).map(|i| first + i * step).collect(),
                    permanent: layout.gcstate_permanent.map(|p| state.wrapping_add(p)),
                })
            }
            (_, _, Some(variable)) => {
                let first = mem.read_u64(variable)?;
                Ok(GcLists {
                    generations: (0..3).map(|i| first + i * step).collect(),
                    permanent: None,
                })
            }
            _ => Err(DecodeError::invalid("garbage collector state", interp)),
        }
    }
}

/// Builds the graph of one snapshot.
pub struct Walker<'a, M: ReadMemory> {
    mem: &'a M,
    layout: &'a Layout,
    graph: Graph,
    index: HashMap<u64, u32>,
    expanded: Vec<bool>,
    queue: VecDeque<u32>,
}

/// One reference found in an object.
type Reference = (u64, Label);

/// The sizes of one dict keys object, as `sys.getsizeof` counts them.
struct KeysTable {
    /// `dk_refcnt`: 1 when one dict alone owns it.
    refcnt: u64,
    /// `_PyDict_KeysSize`: its header, index and entries.
    bytes: u64,
    /// How many values a split table's values array is counted for.
    usable: u64,
}

impl<'a, M: ReadMemory> Walker<'a, M> {
    /// A walker over `mem` with `layout`.
    pub fn new(mem: &'a M, layout: &'a Layout) -> Self {
        let mut graph = Graph::default();
        graph.addrs.push(0);
        graph.type_of.push(NO_NODE);
        graph.shallow.push(0);
        graph.items.push(0);
        graph.tracked.push(false);
        graph.parent.push(NO_NODE);
        graph.label.push(Label::Root(0));
        Walker {
            mem,
            layout,
            graph,
            index: HashMap::default(),
            expanded: vec![true],
            queue: VecDeque::new(),
        }
    }

    /// Adds every object on the collector's `lists` (as not yet reached from a root); those
    /// of the generations are marked tracked, the permanent generation's are not (as
    /// `gc.get_objects()` does not list them). A list that changes under the reader (the
    /// youngest generation of a busy target) is read again, up to [`GC_LIST_TRIES`] times,
    /// then counted torn and taken as far as it was read. Fails only when the target is gone.
    pub fn add_gc_lists(&mut self, lists: &GcLists) -> Result<(), MemoryError> {
        let heads = lists
            .generations
            .iter()
            .map(|&h| (h, true))
            .chain(lists.permanent.map(|h| (h, false)));
        for (head, tracked) in heads {
            let (mut objects, mut whole) = self.read_gc_list(head)?;
            for _ in 1..GC_LIST_TRIES {
                if whole {
                    break;
                }
                (objects, whole) = self.read_gc_list(head)?;
            }
            if !whole {
                self.graph.unfollowed.torn_gc_lists += 1;
            }
            for object in objects {
                if let Some(index) = self.intern(object, NO_NODE, Label::Key)? {
                    self.graph.tracked[index as usize] |= tracked;
                }
            }
        }
        Ok(())
    }

    /// The objects on the list at `head`, and whether it led back to its head (not torn).
    fn read_gc_list(&self, head: u64) -> Result<(Vec<u64>, bool), MemoryError> {
        let mut objects = Vec::new();
        let mut seen = FxHashSet::default();
        let next = |at: u64| match self.mem.read_u64(at) {
            Ok(next) => Ok(Some(next & !GC_POINTER_FLAGS)),
            Err(MemoryError::ProcessGone) => Err(MemoryError::ProcessGone),
            Err(_) => Ok(None),
        };
        let mut node = next(head)?;
        while let Some(at) = node {
            if at == head {
                return Ok((objects, true));
            }
            if at == 0 || objects.len() >= MAX_GC_LIST || !seen.insert(at) {
                break;
            }
            objects.push(at.wrapping_add(self.layout.gc_head_size));
            node = next(at)?;
        }
        Ok((objects, false))
    }

    /// Follows everything reachable from `roots` (breadth first, so each object's first
    /// path is a shortest one), then from the collector's objects no root reached.
    pub fn walk(mut self, roots: Vec<Root>) -> Result<Graph, MemoryError> {
        for (i, root) in roots.iter().enumerate() {
            self.intern(root.addr, 0, Label::Root(i as u32))?;
        }
        self.graph.roots = roots;
        self.drain()?;
        let unreached: Vec<u32> = (1..self.graph.len() as u32)
            .filter(|&n| !self.expanded[n as usize])
            .collect();
        for node in unreached {
            if !self.expanded[node as usize] {
                self.expanded[node as usize] = true;
                self.queue.push_back(node);
                self.drain()?;
            }
        }
        Ok(self.graph)
    }

    fn drain(&mut self) -> Result<(), MemoryError> {
        while let Some(node) = self.queue.pop_front() {
            let addr = self.graph.addrs[node as usize];
            let ty = self.graph.type_of[node as usize];
            let info = self.graph.types.shared(ty);
            let refs = match self.references(addr, ty, &info, node) {
                Ok(refs) => refs,
                Err(DecodeError::Memory(MemoryError::ProcessGone)) => {
                    return Err(MemoryError::ProcessGone);
                }
                Err(_) => {
                    self.graph.unfollowed.unreadable_containers += 1;
                    Vec::new()
                }
            };
            for (target, label) in refs {
                if target != 0 {
                    self.intern(target, node, label)?;
                }
            }
        }
        Ok(())
    }

    /// The node of the object at `addr`, reached from `from` by `label` (`NO_NODE`: from the
    /// collector's list): made and queued the first time, its reference recorded. `None`
    /// when `addr` is not a readable object.
    fn intern(&mut self, addr: u64, from: u32, label: Label) -> Result<Option<u32>, MemoryError> {
        if let Some(&node) = self.index.get(&addr) {
            if from != NO_NODE {
                self.graph.edges.push((from, node));
                if !self.expanded[node as usize] {
                    self.expanded[node as usize] = true;
                    self.graph.parent[node as usize] = from;
                    self.graph.label[node as usize] = label;
                    self.queue.push_back(node);
                }
            }
            return Ok(Some(node));
        }
        if self.graph.len() >= MAX_OBJECTS {
            self.graph.unfollowed.truncated = true;
            return Ok(None);
        }
        let Some((ty, shallow)) = self.object_header(addr)? else {
            self.graph.unfollowed.bad_references += 1;
            return Ok(None);
        };
        let node = self.graph.len() as u32;
        self.index.insert(addr, node);
        self.graph.addrs.push(addr);
        self.graph.type_of.push(ty);
        self.graph.shallow.push(shallow);
        self.graph.items.push(0);
        self.graph.tracked.push(false);
        let reached = from != NO_NODE;
        self.graph.parent.push(from);
        self.graph.label.push(label);
        self.expanded.push(reached);
        if reached {
            self.graph.edges.push((from, node));
            self.queue.push_back(node);
        }
        Ok(Some(node))
    }

    /// The type and base shallow size of the object at `addr`, or `None` if it is not one.
    fn object_header(&mut self, addr: u64) -> Result<Option<(u32, u64)>, MemoryError> {
        if !addr.is_multiple_of(8) {
            return Ok(None);
        }
        let mut header = [0u8; HEADER];
        match self.mem.read(addr, &mut header) {
            Ok(()) => {}
            Err(MemoryError::ProcessGone) => return Err(MemoryError::ProcessGone),
            Err(_) => return Ok(None),
        }
        if field_u64(&header, 0) == 0 {
            // A reference count of 0: freed under the reader.
            return Ok(None);
        }
        let type_addr = field_u64(&header, self.layout.object_type);
        let Some(ty) = self.graph.types.lookup(self.mem, self.layout, type_addr) else {
            return Ok(None);
        };
        let info = self.graph.types.get(ty);
        let mut size = base_size(self.layout, info, &header);
        // A large object must fit in the memory it claims: its last byte is read (a torn or
        // garbage length claims terabytes). A bytearray's buffer is out of line, and only
        // its size is in the count.
        let body = size - pre_header(self.layout, info);
        if body > LARGE_OBJECT && info.kind != Kind::ByteArray {
            let mut last = [0u8; 1];
            match self.mem.read(addr.wrapping_add(body - 1), &mut last) {
                Ok(()) => {}
                Err(MemoryError::ProcessGone) => return Err(MemoryError::ProcessGone),
                Err(_) => return Ok(None),
            }
        }
        if info.kind == Kind::Str {
            size += str_buffers(self.mem, self.layout, addr, &header);
        }
        Ok(Some((ty, size)))
    }

    /// The references held by the object at `addr` (node `node`), by its type's reader;
    /// also records its item count and adds out-of-line storage to its shallow size.
    fn references(
        &mut self,
        addr: u64,
        ty: u32,
        info: &TypeInfo,
        node: u32,
    ) -> Result<Vec<Reference>, DecodeError> {
        let mem = self.mem;
        let l = self.layout;
        let mut refs: Vec<Reference> = Vec::new();
        let mut items = 0u64;
        let mut extra = 0u64;
        match info.kind {
            Kind::List => {
                let len = mem.read_u64(addr.wrapping_add(l.var_size))?;
                let array = mem.read_u64(addr.wrapping_add(l.list_items))?;
                // `allocated` follows `ob_item` in every version.
                let allocated = mem.read_u64(addr.wrapping_add(l.list_items + 8))?;
                if len > MAX_ITEMS || allocated < len || allocated > MAX_ITEMS {
                    return Err(DecodeError::invalid("list", addr));
                }
                // A large array is counted only if its last slot is memory (a torn or garbage
                // `allocated` claims more than there is).
                if allocated * 8 > LARGE_OBJECT {
                    mem.read_u64(array.wrapping_add((allocated - 1) * 8))?;
                }
                extra = allocated * 8;
                items = len;
                let bytes = read_pointers(mem, array, len)?;
                pointers(&bytes, &mut refs, Label::Index);
            }
            Kind::Tuple => {
                let len = mem.read_u64(addr.wrapping_add(l.var_size))?;
                if len > MAX_ITEMS {
                    return Err(DecodeError::invalid("tuple", addr));
                }
                items = len;
                let bytes = read_pointers(mem, addr.wrapping_add(l.tuple_items), len)?;
                pointers(&bytes, &mut refs, Label::Index);
            }
            Kind::Dict => {
                items = mem.read_u64(addr.wrapping_add(l.dict_used))?;
                extra = self.dict_references(addr, &mut refs)?;
            }
            Kind::OrderedDict => {
                items = mem.read_u64(addr.wrapping_add(l.dict_used))?;
                extra = self.dict_references(addr, &mut refs)?;
                extra += self.odict_nodes_bytes(addr, items)?;
                // A class's instance reader finds the same `__dict__` at `tp_dictoffset`.
                if !info.instance {
                    let dict = mem.read_u64(addr.wrapping_add(l.odict_inst_dict))?;
                    refs.push((dict, Label::Namespace));
                }
            }
            Kind::Set => {
                let bytes = mem.read_vec(addr, span(&[l.set_used, l.set_mask, l.set_table]))?;
                items = field_u64(&bytes, l.set_used);
                let mask = field_u64(&bytes, l.set_mask);
                let table = field_u64(&bytes, l.set_table);
                let slots = mask.wrapping_add(1);
                if mask > MAX_ITEMS || items > slots || !slots.is_power_of_two() {
                    return Err(DecodeError::invalid("set", addr));
                }
                if table < addr || table >= addr.wrapping_add(info.basicsize) {
                    extra = slots * l.set_entry_size;
                }
                let entries = read_pointers(mem, table, slots * l.set_entry_size / 8)?;
                for i in 0..slots {
                    let key = field_u64(&entries, i * l.set_entry_size);
                    // The dummy left by a removal is a static object of no type.
                    if key != 0 && !self.is_typeless(key) {
                        refs.push((key, Label::Member));
                    }
                }
            }
            Kind::Deque => {
                items = mem.read_u64(addr.wrapping_add(l.var_size))?;
                self.deque_references(addr, items, &mut refs)?;
                // `deque.__sizeof__` counts the blocks from `leftindex` over its items, plus
                // one (`(leftindex + len + BLOCKLEN) / BLOCKLEN` of them).
                let left = mem.read_u64(addr.wrapping_add(l.deque_leftindex))?;
                extra = (left.min(63) + items + 64) / 64 * (l.deque_block_right + 8);
            }
            Kind::Module => {
                refs.push((
                    mem.read_u64(addr.wrapping_add(l.module_dict))?,
                    Label::Namespace,
                ));
            }
            Kind::Function
            | Kind::Cell
            | Kind::Method
            | Kind::Property
            | Kind::ClassMethod
            | Kind::StaticMethod
            | Kind::BuiltinFunction
            | Kind::BuiltinMethod
            | Kind::MethodWrapper
            | Kind::Descriptor
            | Kind::WeakRef
            | Kind::Namespace
            | Kind::MappingProxy
            | Kind::GenericAlias
            | Kind::TimeZone
            | Kind::Traceback
            | Kind::Union
            | Kind::Slice => fixed_references(mem, l, addr, info.kind, &mut refs)?,
            Kind::ZoneInfo => self.zoneinfo_references(addr, &mut refs)?,
            Kind::NumpyArray => {
                let array = numpy_array(mem, addr)?;
                items = array.elements;
                extra = array.owned_bytes;
                if array.base != 0 {
                    refs.push((array.base, Label::Attr("base")));
                }
                if let Some(count) = array.object_items {
                    let bytes = read_pointers(mem, array.data, count)?;
                    pointers(&bytes, &mut refs, Label::Index);
                }
            }
            Kind::Exception => {
                fixed_references(mem, l, addr, info.kind, &mut refs)?;
                // A class's instance reader finds its `__dict__` and members itself.
                if !info.instance {
                    refs.push((
                        mem.read_u64(addr.wrapping_add(l.exception_dict))?,
                        Label::Namespace,
                    ));
                    for (i, (offset, _)) in info.slots.iter().enumerate() {
                        refs.push((
                            mem.read_u64(addr.wrapping_add(*offset))?,
                            Label::Slot(i as u32),
                        ));
                    }
                }
            }
            Kind::DateTime | Kind::Time => {
                let (has, tzinfo) = match info.kind {
                    Kind::DateTime => (l.datetime_hastzinfo, l.datetime_tzinfo),
                    _ => (l.time_hastzinfo, l.time_tzinfo),
                };
                // The `tzinfo` member exists only in an object made aware.
                if mem.read_u8(addr.wrapping_add(has))? != 0 {
                    refs.push((
                        mem.read_u64(addr.wrapping_add(tzinfo))?,
                        Label::Attr("tzinfo"),
                    ));
                }
            }
            Kind::Generator | Kind::Coroutine | Kind::AsyncGenerator => {
                fixed_references(mem, l, addr, info.kind, &mut refs)?;
                if let Some(size) = self.embedded_frame(addr, info, &mut refs)? {
                    self.graph.shallow[node as usize] = size;
                }
            }
            Kind::Frame if l.capabilities().interpreter_frames => {
                fixed_references(mem, l, addr, info.kind, &mut refs)?;
                if let Some(slots) = self.owned_interpreter_frame(addr, &mut refs)? {
                    // `frame.__sizeof__`: the object up to its frame's local slots, then
                    // one for each its code needs.
                    self.graph.shallow[node as usize] =
                        info.basicsize + slots * 8 + pre_header(l, info);
                }
            }
            Kind::Frame => {
                fixed_references(mem, l, addr, info.kind, &mut refs)?;
                if let Some(slots) = self.frame_object_locals(addr, &mut refs)? {
                    // `frame.__sizeof__`: one slot is in `PyFrameObject` already; `ob_size`
                    // may be larger (a frame reused from a free list).
                    self.graph.shallow[node as usize] =
                        info.basicsize + slots.saturating_sub(1) * 8 + pre_header(l, info);
                }
            }
            Kind::Code => extra = self.code_references(addr, &mut refs)?,
            Kind::Type => {
                let type_flags = mem.read_u64(addr.wrapping_add(l.type_flags))?;
                if type_flags & flags::HEAPTYPE == 0 {
                    self.graph.shallow[node as usize] = static_type_size(l, info);
                } else {
                    extra = self.cached_keys_bytes(addr)?;
                }
                refs.push((
                    mem.read_u64(addr.wrapping_add(l.type_dict))?,
                    Label::Namespace,
                ));
                refs.push((
                    mem.read_u64(addr.wrapping_add(l.type_mro))?,
                    Label::Attr("__mro__"),
                ));
            }
            Kind::Str | Kind::Int | Kind::Bytes | Kind::ByteArray | Kind::Leaf | Kind::Instance => {
            }
            Kind::Unknown => {
                *self.graph.unfollowed.by_type.entry(ty).or_default() += 1;
            }
        }
        if info.instance {
            self.instance_references(addr, info, &mut refs)?;
        }
        self.graph.items[node as usize] = items;
        self.graph.shallow[node as usize] += extra;
        Ok(refs)
    }

    /// Whether `addr` holds an object header with a null type (set dummies).
    fn is_typeless(&self, addr: u64) -> bool {
        self.mem
            .read_u64(addr.wrapping_add(self.layout.object_type))
            .is_ok_and(|t| t == 0)
    }

    /// A dict's keys and values; returns the bytes of its tables as `sys.getsizeof` counts
    /// them (`_PyDict_SizeOf`): a split table's values array sized by its shared keys'
    /// usable entries, and the keys object only where the dict alone owns it (a reference
    /// count of 1: not the shared keys of a class, not the empty-keys singleton).
    fn dict_references(
        &mut self,
        addr: u64,
        refs: &mut Vec<Reference>,
    ) -> Result<u64, DecodeError> {
        let l = self.layout;
        let keys = self.mem.read_u64(addr.wrapping_add(l.dict_keys))?;
        let values = self.mem.read_u64(addr.wrapping_add(l.dict_values))?;
        let split = values != 0;
        let values_at = split.then(|| values.wrapping_add(dict_values_header(l)));
        let capacity = if split {
            self.values_capacity(values)?
        } else {
            u64::MAX
        };
        let items = keys_items_bounded(self.mem, l, keys, values_at, MAX_ITEMS, capacity)?;
        for (key, value) in items {
            refs.push((key, Label::Key));
            refs.push((value, Label::Value(key)));
        }
        let Some(table) = self.keys_table(keys) else {
            return Ok(0);
        };
        let values_bytes = if split { table.usable * 8 } else { 0 };
        let keys_bytes = if table.refcnt == 1 { table.bytes } else { 0 };
        Ok(values_bytes + keys_bytes)
    }

    /// What `OrderedDict.__sizeof__` adds to its dict's size: the pointers of its node index,
    /// and one node per item while it has any.
    fn odict_nodes_bytes(&self, addr: u64, items: u64) -> Result<u64, DecodeError> {
        let l = self.layout;
        let bytes = self.mem.read_vec(
            addr,
            span(&[l.odict_first, l.odict_fast_nodes_size, l.odict_inst_dict]),
        )?;
        let index = field_u64(&bytes, l.odict_fast_nodes_size);
        if index > MAX_ITEMS || items > MAX_ITEMS {
            return Err(DecodeError::invalid("OrderedDict", addr));
        }
        let nodes = if field_u64(&bytes, l.odict_first) != 0 {
            items * l.odict_node_size
        } else {
            0
        };
        Ok(index * 8 + nodes)
    }

    /// How many value pointers a split table's values array holds.
    fn values_capacity(&self, values: u64) -> Result<u64, DecodeError> {
        let l = self.layout;
        Ok(match l.version {
            // PyDictValues { uint8_t capacity; uint8_t size; uint8_t embedded; uint8_t valid; }
            (3, 13..) => u64::from(self.mem.read_u8(values)?),
            // A prefix before the values: its last byte is the prefix's size, which is the
            // capacity rounded up past two bookkeeping bytes.
            (3, 11..=12) => u64::from(self.mem.read_u8(values.wrapping_sub(1))?).saturating_sub(2),
            // ≤3.10: sized by the shared keys' usable entries.
            _ => u64::MAX,
        })
    }

    /// The sizes of the dict keys object at `keys`; `None` when it cannot be read or claims
    /// an implausible size.
    fn keys_table(&self, keys: u64) -> Option<KeysTable> {
        let l = self.layout;
        let header = self.mem.read_vec(keys, l.dictkeys_indices as usize).ok()?;
        // `dk_refcnt` opens the keys object, and `dk_usable` comes just before `dk_nentries`,
        // in every version (3.6–3.15).
        let refcnt = field_u64(&header, 0);
        let nentries = field_u64(&header, l.dictkeys_nentries);
        let usable_left = field_u64(&header, l.dictkeys_nentries.checked_sub(8)?);
        let (slots, index_bytes, entry) = match (l.dictkeys_size, l.dictkeys_log2_size) {
            (Some(at), _) => {
                let size = field_u64(&header, at);
                if size > MAX_ITEMS {
                    return None;
                }
                let width = match size {
                    0..=0xff => 1,
                    0x100..=0xffff => 2,
                    _ => 4,
                };
                (size, size * width, l.dict_entry_size)
            }
            (None, Some(at)) => {
                let log2 = u64::from(field_u8(&header, at));
                let log2_index = l
                    .dictkeys_log2_index_bytes
                    .map_or(0, |a| u64::from(field_u8(&header, a)));
                if log2 > 27 || log2_index > 29 {
                    return None;
                }
                let index = 1u64 << log2_index;
                let unicode = l.dictkeys_kind.is_some_and(|a| field_u8(&header, a) != 0);
                let entry = match (unicode, l.dict_unicode_entry_size) {
                    (true, Some(size)) => size,
                    _ => l.dict_entry_size,
                };
                (1u64 << log2, index, entry)
            }
            _ => return None,
        };
        let usable_fraction = slots * 2 / 3;
        // `shared_keys_usable_size`: ≤3.10 the usable fraction of the table, 3.11+ the
        // entries used plus those still free.
        let usable = if l.dictkeys_size.is_some() {
            usable_fraction
        } else {
            nentries.saturating_add(usable_left).min(usable_fraction)
        };
        Some(KeysTable {
            refcnt,
            bytes: l.dictkeys_indices + index_bytes + usable_fraction * entry,
            usable,
        })
    }

    /// What a class's `ht_cached_keys` (the keys its instances share) adds to its size, as
    /// `type.__sizeof__` counts it.
    fn cached_keys_bytes(&self, addr: u64) -> Result<u64, DecodeError> {
        let l = self.layout;
        let Some(at) = l.heaptype_cached_keys else {
            return Ok(0);
        };
        let keys = self.mem.read_u64(addr.wrapping_add(at))?;
        Ok(match keys {
            0 => 0,
            keys => self.keys_table(keys).map_or(0, |t| t.bytes),
        })
    }

    /// A code object's constants, names, file name and tables (and, 3.11+, the bytes and
    /// tuples it made for `co_code`, `co_varnames`, … and kept); returns what `sys.getsizeof`
    /// counts beyond its in-object size: ≤3.10 the cell-to-argument map and the
    /// per-instruction cache, every version the `co_extra` slots of PEP 523 users.
    fn code_references(&self, addr: u64, refs: &mut Vec<Reference>) -> Result<u64, DecodeError> {
        let mem = self.mem;
        let l = self.layout;
        let mut fields: Vec<(u64, &'static str)> = vec![
            (l.code_consts, "co_consts"),
            (l.code_names, "co_names"),
            (l.code_filename, "co_filename"),
            (l.code_name, "co_name"),
        ];
        let optional = [
            (l.code_qualname, "co_qualname"),
            (l.code_freevars, "co_freevars"),
            (l.code_cellvars, "co_cellvars"),
            (l.code_code, "co_code"),
            (l.code_exceptiontable, "co_exceptiontable"),
            (l.code_localkinds, "co_localspluskinds"),
            (l.code_cached_code, "co_code"),
        ];
        fields.extend(optional.iter().filter_map(|(at, n)| at.map(|at| (at, *n))));
        let capabilities = l.capabilities();
        let localnames = if capabilities.localsplus_names {
            "co_localsplusnames"
        } else {
            "co_varnames"
        };
        let linetable = if capabilities.line_table {
            "co_linetable"
        } else {
            "co_lnotab"
        };
        fields.push((l.code_localnames, localnames));
        fields.push((l.code_linetable, linetable));
        let mut offsets: Vec<u64> = fields.iter().map(|f| f.0).collect();
        offsets.push(l.code_extra);
        offsets.extend(
            [
                l.code_cell2arg,
                l.code_opcache,
                l.code_opcache_size,
                l.code_cached,
            ]
            .into_iter()
            .flatten(),
        );
        let bytes = mem.read_vec(addr, span(&offsets))?;
        for (at, name) in &fields {
            refs.push((field_u64(&bytes, *at), Label::Attr(name)));
        }
        if let (Some(at), Some(size)) = (l.code_cached, l.code_cached_size) {
            let cached = field_u64(&bytes, at);
            if cached != 0 {
                const CACHED: [&str; 4] = ["co_code", "co_varnames", "co_cellvars", "co_freevars"];
                let members = read_pointers(mem, cached, (size / 8).min(CACHED.len() as u64))?;
                for (i, name) in CACHED.iter().enumerate().take(members.len() / 8) {
                    refs.push((field_u64(&members, i as u64 * 8), Label::Attr(name)));
                }
            }
        }
        let mut extra = 0u64;
        let extras = field_u64(&bytes, l.code_extra);
        if extras != 0 {
            // `_PyCodeObjectExtra`: `ce_size`, then that many pointers.
            let slots = mem.read_u64(extras)?;
            if slots <= MAX_VAR_ITEMS {
                extra += 8 + slots * 8;
            }
        }
        // The size of the tuple or bytes object a code object points to at `at`.
        let length = |at: u64| -> Result<u64, DecodeError> {
            let object = field_u64(&bytes, at);
            if object == 0 {
                return Ok(0);
            }
            let n = mem.read_u64(object.wrapping_add(l.var_size))?;
            Ok(if n <= MAX_VAR_ITEMS { n } else { 0 })
        };
        if let (Some(map), Some(cells)) = (l.code_cell2arg, l.code_cellvars)
            && field_u64(&bytes, map) != 0
        {
            extra += length(cells)? * 8;
        }
        if let (Some(cache), Some(count), Some(entry), Some(code)) = (
            l.code_opcache,
            l.code_opcache_size,
            l.opcache_entry_size,
            l.code_code,
        ) && field_u64(&bytes, cache) != 0
        {
            // The map of one byte per code unit (2 bytes), then the entries.
            extra += length(code)? / 2 + u64::from(field_u8(&bytes, count)) * entry;
        }
        Ok(extra)
    }

    /// The code and local variables of a 3.11+ generator's (coroutine's, async
    /// generator's) embedded frame, while it holds them (not once finished and cleared);
    /// returns its size as `gen.__sizeof__` counts it (the object up to the frame's local
    /// slots, then `co_nlocalsplus + co_stacksize` slots) with the GC header. `None` before
    /// 3.11 (the frame is an object of its own) or when no code can be read. The value stack
    /// of a suspended frame is not followed.
    fn embedded_frame(
        &self,
        addr: u64,
        info: &TypeInfo,
        refs: &mut Vec<Reference>,
    ) -> Result<Option<u64>, DecodeError> {
        let mem = self.mem;
        let l = self.layout;
        let (Some(iframe), Some(state_at)) = (l.gen_iframe, l.gen_frame_state) else {
            return Ok(None);
        };
        let capabilities = l.capabilities();
        let frame = addr.wrapping_add(iframe);
        let Some((code, slots)) = self.interpreter_frame_code(frame)? else {
            return Ok(None);
        };
        let size = iframe + l.frame_localsplus + slots * 8 + pre_header(l, info);
        // 3.12+: the frame holds the code even once cleared (3.11: `gi_code` does).
        if l.gen_code.is_none() {
            refs.push((code, Label::Attr(code_attribute(info.kind))));
        }
        let state = mem.read_u8(addr.wrapping_add(state_at))? as i8;
        let live = if capabilities.gen_frame_states_from_zero {
            state != FRAME_CLEARED_FROM_3_15
        } else {
            state < FRAME_COMPLETED_3_11_TO_3_14
        };
        if live {
            let frame_object = match info.kind {
                Kind::Coroutine => "cr_frame",
                Kind::AsyncGenerator => "ag_frame",
                _ => "gi_frame",
            };
            self.interpreter_frame(frame, code, frame_object, refs)?;
        }
        Ok(Some(size))
    }

    /// The code of the 3.11+ interpreter frame at `frame`, and how many slots it has
    /// (`co_nlocalsplus + co_stacksize`); `None` for a frame without code.
    fn interpreter_frame_code(&self, frame: u64) -> Result<Option<(u64, u64)>, DecodeError> {
        let mem = self.mem;
        let l = self.layout;
        let mut code = mem.read_u64(frame.wrapping_add(l.frame_code))?;
        if l.capabilities().tagged_stack_refs {
            code &= !STACKREF_TAG_BITS;
        }
        if code == 0 {
            return Ok(None);
        }
        let slots = u64::from(mem.read_u32(code.wrapping_add(l.code_nlocals))?);
        let stack = u64::from(mem.read_u32(code.wrapping_add(l.code_stacksize))?);
        if slots > MAX_FRAME_SLOTS || stack > MAX_FRAME_SLOTS {
            return Err(DecodeError::invalid("frame's code", code));
        }
        Ok(Some((code, slots + stack)))
    }

    /// What the 3.11+ interpreter frame at `frame`, running `code`, holds (for a generator
    /// that holds it, or a frame object that owns it): its function, globals, builtins,
    /// locals dict, the frame object made for it (shown as `frame_object`), and its local,
    /// cell and free variables, named from `co_localsplusnames`. Its value stack is not
    /// followed.
    fn interpreter_frame(
        &self,
        frame: u64,
        code: u64,
        frame_object: &'static str,
        refs: &mut Vec<Reference>,
    ) -> Result<(), DecodeError> {
        let mem = self.mem;
        let l = self.layout;
        let untag = if l.capabilities().tagged_stack_refs {
            !STACKREF_TAG_BITS
        } else {
            u64::MAX
        };
        let specials = mem.read_vec(frame, l.frame_localsplus as usize)?;
        let fields = [
            (l.frame_func, "<function>"),
            (Some(l.frame_globals), "f_globals"),
            (Some(l.frame_builtins), "f_builtins"),
            (Some(l.frame_locals), "f_locals"),
            (l.frame_object, frame_object),
        ];
        for (at, name) in fields {
            if let Some(at) = at {
                refs.push((field_u64(&specials, at) & untag, Label::Attr(name)));
            }
        }
        let locals = u64::from(mem.read_u32(code.wrapping_add(l.code_nlocals))?);
        let names = mem.read_u64(code.wrapping_add(l.code_localnames))?;
        self.local_slots(frame.wrapping_add(l.frame_localsplus), names, locals, refs)
    }

    /// What a 3.11+ frame object's interpreter frame holds, when the object owns it (its
    /// `f_frame` is its own `_f_frame_data`, copied there when the call returned). A frame
    /// the thread runs, or a generator holds, is walked from there (the thread's stack, the
    /// generator's embedded frame). Returns how many slots its code needs (what
    /// `frame.__sizeof__` counts, read from the code of the frame it points at, wherever
    /// that is), `None` without code.
    fn owned_interpreter_frame(
        &self,
        addr: u64,
        refs: &mut Vec<Reference>,
    ) -> Result<Option<u64>, DecodeError> {
        let l = self.layout;
        let (Some(f_frame), Some(data), Some(owner)) =
            (l.frameobject_frame, l.frameobject_data, l.frame_owner)
        else {
            return Ok(None);
        };
        let frame = self.mem.read_u64(addr.wrapping_add(f_frame))?;
        let owned = frame == addr.wrapping_add(data)
            && self.mem.read_u8(frame.wrapping_add(owner))? == FRAME_OWNED_BY_FRAME_OBJECT;
        if !owned {
            // The thread's frame may be popped and reused under a live read: without its
            // code the object keeps its basic size, and its own members are still followed.
            return Ok(self
                .interpreter_frame_code(frame)
                .ok()
                .flatten()
                .map(|c| c.1));
        }
        let Some((code, slots)) = self.interpreter_frame_code(frame)? else {
            return Ok(None);
        };
        refs.push((code, Label::Attr("f_code")));
        self.interpreter_frame(frame, code, "<frame object>", refs)?;
        Ok(Some(slots))
    }

    /// The local, cell and free variables of a frame object that owns them (≤3.10), named
    /// from its code's `co_varnames`, `co_cellvars` and `co_freevars`; returns how many
    /// slots its code needs (those and `co_stacksize`), `None` without code. Its value stack
    /// is not followed.
    fn frame_object_locals(
        &self,
        addr: u64,
        refs: &mut Vec<Reference>,
    ) -> Result<Option<u64>, DecodeError> {
        let mem = self.mem;
        let l = self.layout;
        let code = mem.read_u64(addr.wrapping_add(l.frame_code))?;
        if code == 0 {
            return Ok(None);
        }
        let mut at = addr.wrapping_add(l.frame_localsplus);
        let mut slots = 0u64;
        let locals = u64::from(mem.read_u32(code.wrapping_add(l.code_nlocals))?);
        let groups = [
            (Some(l.code_localnames), Some(locals)),
            (l.code_cellvars, None),
            (l.code_freevars, None),
        ];
        for (names_at, count) in groups {
            let Some(names_at) = names_at else { continue };
            let names = mem.read_u64(code.wrapping_add(names_at))?;
            let count = match count {
                Some(count) => count,
                None => mem.read_u64(names.wrapping_add(l.var_size))?,
            };
            if count > MAX_FRAME_SLOTS {
                return Err(DecodeError::invalid("frame's code", code));
            }
            self.local_slots(at, names, count, refs)?;
            at = at.wrapping_add(count * 8);
            slots += count;
        }
        let stack = u64::from(mem.read_u32(code.wrapping_add(l.code_stacksize))?);
        Ok(Some(slots + stack.min(MAX_FRAME_SLOTS)))
    }

    /// The `count` local slots from `first` (in a frame's `localsplus`), each named by the
    /// item of the tuple `names` at the same index.
    fn local_slots(
        &self,
        first: u64,
        names: u64,
        count: u64,
        refs: &mut Vec<Reference>,
    ) -> Result<(), DecodeError> {
        let l = self.layout;
        let stackrefs = l.capabilities().tagged_stack_refs;
        let values = read_pointers(self.mem, first, count)?;
        let names = read_pointers(self.mem, names.wrapping_add(l.tuple_items), count)?;
        for i in 0..count {
            if let Some(LocalSlot::Object(object)) =
                decode_slot(field_u64(&values, i * 8), stackrefs)
            {
                refs.push((object, Label::Local(field_u64(&names, i * 8))));
            }
        }
        Ok(())
    }

    /// A `zoneinfo.ZoneInfo`'s key and file repr, and the objects of its local time types
    /// (`_ttinfo`: offset, DST offset, name), those of its C array and of the rule after its
    /// last transition (most are the same objects).
    fn zoneinfo_references(&self, addr: u64, refs: &mut Vec<Reference>) -> Result<(), DecodeError> {
        /// More local time types than any zone has (a TZif file's `typecnt` is at most 256).
        const MAX_TTINFOS: u64 = 256;
        let l = self.layout;
        let (
            Some(key),
            Some(file_repr),
            Some(count),
            Some(array),
            Some(std),
            Some(dst),
            Some(size),
        ) = (
            l.zoneinfo_key,
            l.zoneinfo_file_repr,
            l.zoneinfo_num_ttinfos,
            l.zoneinfo_ttinfos,
            l.zoneinfo_rule_std,
            l.zoneinfo_rule_dst,
            l.ttinfo_size,
        )
        else {
            return Ok(());
        };
        let members = [l.ttinfo_utcoff, l.ttinfo_dstoff, l.ttinfo_tzname];
        let names = ["<utcoffset>", "<dst>", "<tzname>"];
        let bytes = self
            .mem
            .read_vec(addr, span(&[key, file_repr, count, array, dst + size - 8]))?;
        refs.push((field_u64(&bytes, key), Label::Attr("key")));
        refs.push((field_u64(&bytes, file_repr), Label::Attr("<file repr>")));
        let ttinfo = |at: &[u8], base: u64, refs: &mut Vec<Reference>| {
            for (member, name) in members.iter().zip(names) {
                if let Some(member) = member {
                    refs.push((field_u64(at, base + member), Label::Attr(name)));
                }
            }
        };
        ttinfo(&bytes, std, refs);
        ttinfo(&bytes, dst, refs);
        let count = field_u64(&bytes, count);
        let array = field_u64(&bytes, array);
        if count > MAX_TTINFOS {
            return Err(DecodeError::invalid("ZoneInfo", addr));
        }
        if count > 0 {
            let infos = self.mem.read_vec(array, (count * size) as usize)?;
            for i in 0..count {
                ttinfo(&infos, i * size, refs);
            }
        }
        Ok(())
    }

    fn deque_references(
        &self,
        addr: u64,
        len: u64,
        refs: &mut Vec<Reference>,
    ) -> Result<(), DecodeError> {
        const BLOCKLEN: u64 = 64;
        let l = self.layout;
        if len > MAX_ITEMS {
            return Err(DecodeError::invalid("deque", addr));
        }
        let mut block = self.mem.read_u64(addr.wrapping_add(l.deque_leftblock))?;
        let mut index = self.mem.read_u64(addr.wrapping_add(l.deque_leftindex))?;
        let mut found = 0u64;
        let block_bytes = (l.deque_block_right + 8) as usize;
        while found < len {
            if block == 0 || index >= BLOCKLEN {
                return Err(DecodeError::invalid("deque", addr));
            }
            let bytes = self.mem.read_vec(block, block_bytes)?;
            while index < BLOCKLEN && found < len {
                let item = field_u64(&bytes, l.deque_block_data + index * 8);
                refs.push((item, Label::Index(found as u32)));
                found += 1;
                index += 1;
            }
            block = field_u64(&bytes, l.deque_block_right);
            index = 0;
        }
        Ok(())
    }

    /// An instance's `__dict__` (or its inline/split values) and `__slots__`, and its class.
    fn instance_references(
        &mut self,
        addr: u64,
        info: &TypeInfo,
        refs: &mut Vec<Reference>,
    ) -> Result<(), DecodeError> {
        let mem = self.mem;
        let l = self.layout;
        let type_addr = mem.read_u64(addr.wrapping_add(l.object_type))?;
        refs.push((type_addr, Label::Class));
        for (i, (offset, _)) in info.slots.iter().enumerate() {
            refs.push((
                mem.read_u64(addr.wrapping_add(*offset))?,
                Label::Slot(i as u32),
            ));
        }
        if info.flags & flags::MANAGED_DICT != 0 && l.capabilities().managed_dicts {
            let (dict, values) = match l.version {
                (3, 11) => (
                    mem.read_u64(addr.wrapping_sub(24))?,
                    mem.read_u64(addr.wrapping_sub(32))?,
                ),
                (3, 12) => {
                    let dict_or_values = mem.read_u64(addr.wrapping_sub(24))?;
                    if dict_or_values & 1 == 1 {
                        (0, dict_or_values - 1)
                    } else {
                        (dict_or_values, 0)
                    }
                }
                _ => {
                    let dict = mem.read_u64(addr.wrapping_sub(24))?;
                    let inline = addr.wrapping_add(info.basicsize);
                    let valid = info.flags & flags::INLINE_VALUES != 0
                        && mem.read_u8(inline.wrapping_add(3))? != 0;
                    (dict, if valid { inline } else { 0 })
                }
            };
            if dict != 0 {
                refs.push((dict, Label::Namespace));
            } else if values != 0 && info.cached_keys != 0 {
                let capacity = self.values_capacity(values)?;
                let at = values.wrapping_add(dict_values_header(l));
                for (key, value) in
                    keys_items_bounded(mem, l, info.cached_keys, Some(at), MAX_ITEMS, capacity)?
                {
                    refs.push((value, Label::Attribute(key)));
                }
            }
        } else if info.dictoffset > 0 {
            let dict = mem.read_u64(addr.wrapping_add(info.dictoffset as u64))?;
            refs.push((dict, Label::Namespace));
        } else if info.dictoffset < 0 {
            // At the end of a variable-size object (a subclass of int, tuple, …; ≤3.11):
            // `_PyObject_VAR_SIZE` of its `ob_size` items, rounded up to a pointer.
            let items = (mem.read_u64(addr.wrapping_add(l.var_size))? as i64).unsigned_abs();
            if items > MAX_ITEMS {
                self.graph.unfollowed.instance_dicts += 1;
                return Ok(());
            }
            let size = (info.basicsize + items * info.itemsize + 7) & !7;
            let at = (size as i64).wrapping_add(info.dictoffset) as u64;
            refs.push((mem.read_u64(addr.wrapping_add(at))?, Label::Namespace));
        }
        Ok(())
    }
}

/// The references of the object at `addr` that [`fixed_fields`] names for `kind`, read at once.
fn fixed_references(
    mem: &impl ReadMemory,
    l: &Layout,
    addr: u64,
    kind: Kind,
    refs: &mut Vec<Reference>,
) -> Result<(), DecodeError> {
    let fields = fixed_fields(l, kind);
    let end = fields.iter().filter_map(|f| f.0).max().map_or(8, |m| m + 8);
    let bytes = mem.read_vec(addr, end as usize)?;
    refs.extend(
        fields
            .iter()
            .filter_map(|(at, label)| at.map(|at| (field_u64(&bytes, at), *label))),
    );
    Ok(())
}

/// The attribute a generator-like object shows its code as.
fn code_attribute(kind: Kind) -> &'static str {
    match kind {
        Kind::Coroutine => "cr_code",
        Kind::AsyncGenerator => "ag_code",
        _ => "gi_code",
    }
}

/// The most references [`fixed_fields`] names for one kind.
const MAX_FIXED: usize = 8;

/// The references of an object of `kind` kept at fixed offsets, with their labels (`None`:
/// a member this version has not, or past the kind's own; all `None` for kinds read
/// otherwise). A fixed array: this runs for every function the walk meets.
fn fixed_fields(l: &Layout, kind: Kind) -> [(Option<u64>, Label); MAX_FIXED] {
    let attr = |at: u64, name: &'static str| (Some(at), Label::Attr(name));
    let fields: &[(Option<u64>, Label)] = match kind {
        Kind::Function => &[
            (Some(l.func_dict), Label::Namespace),
            (Some(l.func_closure), Label::Closure),
            attr(l.func_defaults, "__defaults__"),
            attr(l.func_kwdefaults, "__kwdefaults__"),
            attr(l.func_code, "__code__"),
            attr(l.func_globals, "__globals__"),
            attr(l.func_qualname, "__qualname__"),
            attr(l.func_module, "__module__"),
        ],
        Kind::Cell => &[(Some(l.cell_ref), Label::CellContents)],
        Kind::Method => &[
            attr(l.method_self, "__self__"),
            attr(l.method_func, "__func__"),
        ],
        Kind::Property => &[
            attr(l.property_get, "fget"),
            attr(l.property_set, "fset"),
            attr(l.property_del, "fdel"),
            attr(l.property_doc, "__doc__"),
            (l.property_name, Label::Attr("__name__")),
        ],
        Kind::ClassMethod => &[
            attr(l.classmethod_callable, "__func__"),
            (Some(l.classmethod_dict), Label::Namespace),
        ],
        Kind::StaticMethod => &[
            attr(l.staticmethod_callable, "__func__"),
            (Some(l.staticmethod_dict), Label::Namespace),
        ],
        Kind::BuiltinFunction => &[
            attr(l.cfunction_self, "__self__"),
            attr(l.cfunction_module, "__module__"),
        ],
        Kind::BuiltinMethod => &[
            attr(l.cfunction_self, "__self__"),
            attr(l.cfunction_module, "__module__"),
            (l.cmethod_class, Label::Attr("<defining class>")),
        ],
        Kind::MethodWrapper => &[
            attr(l.method_wrapper_descr, "<descriptor>"),
            attr(l.method_wrapper_self, "__self__"),
        ],
        Kind::Descriptor => &[
            attr(l.descr_type, "__objclass__"),
            attr(l.descr_name, "__name__"),
            attr(l.descr_qualname, "__qualname__"),
        ],
        // `wr_object`, the referent, is deliberately left out: a weak reference keeps
        // nothing alive, so it is no edge of the graph (and no retention path goes through
        // it). The callback is held strongly.
        Kind::WeakRef => &[attr(l.weakref_callback, "__callback__")],
        Kind::Generator => &[
            (l.gen_frame, Label::Attr("gi_frame")),
            (l.gen_code, Label::Attr("gi_code")),
            attr(l.gen_name, "__name__"),
            attr(l.gen_qualname, "__qualname__"),
        ],
        Kind::Coroutine => &[
            (l.gen_frame, Label::Attr("cr_frame")),
            (l.gen_code, Label::Attr("cr_code")),
            attr(l.gen_name, "__name__"),
            attr(l.gen_qualname, "__qualname__"),
            (l.coro_origin, Label::Attr("cr_origin")),
            (l.gen_origin_or_finalizer, Label::Attr("cr_origin")),
        ],
        Kind::AsyncGenerator => &[
            (l.gen_frame, Label::Attr("ag_frame")),
            (l.gen_code, Label::Attr("ag_code")),
            attr(l.gen_name, "__name__"),
            attr(l.gen_qualname, "__qualname__"),
            (l.asyncgen_finalizer, Label::Attr("<finalizer>")),
            (l.gen_origin_or_finalizer, Label::Attr("<finalizer>")),
        ],
        Kind::Namespace => &[(Some(l.namespace_dict), Label::Namespace)],
        Kind::MappingProxy => &[attr(l.mappingproxy_mapping, "<mapping>")],
        Kind::GenericAlias => &[
            (l.generic_alias_origin, Label::Attr("__origin__")),
            (l.generic_alias_args, Label::Attr("__args__")),
            (l.generic_alias_parameters, Label::Attr("__parameters__")),
        ],
        Kind::TimeZone => &[
            attr(l.timezone_offset, "<offset>"),
            attr(l.timezone_name, "<name>"),
        ],
        // 3.11+: the members of the object itself (what its interpreter frame holds is
        // read by [`Walker::owned_interpreter_frame`]).
        Kind::Frame if l.capabilities().interpreter_frames => &[
            attr(l.frameobject_back, "f_back"),
            attr(l.frameobject_trace, "f_trace"),
            (l.frameobject_extra_locals, Label::Attr("f_locals")),
            (l.frameobject_locals_cache, Label::Attr("<locals cache>")),
            (
                l.frameobject_overwritten_locals,
                Label::Attr("<overwritten locals>"),
            ),
        ],
        Kind::Frame => &[
            attr(l.frameobject_back, "f_back"),
            attr(l.frameobject_trace, "f_trace"),
            attr(l.frame_code, "f_code"),
            attr(l.frame_globals, "f_globals"),
            attr(l.frame_builtins, "f_builtins"),
            attr(l.frame_locals, "f_locals"),
        ],
        Kind::Traceback => &[
            attr(l.traceback_next, "tb_next"),
            attr(l.traceback_frame, "tb_frame"),
        ],
        // Its `__dict__` is read with its members (by the instance reader for a class).
        Kind::Exception => &[
            attr(l.exception_args, "args"),
            (l.exception_notes, Label::Attr("__notes__")),
            attr(l.exception_traceback, "__traceback__"),
            attr(l.exception_context, "__context__"),
            attr(l.exception_cause, "__cause__"),
        ],
        Kind::Union => &[
            (l.union_args, Label::Attr("__args__")),
            (l.union_hashable_args, Label::Attr("<hashable args>")),
            (l.union_unhashable_args, Label::Attr("<unhashable args>")),
            (l.union_parameters, Label::Attr("__parameters__")),
        ],
        Kind::Slice => &[
            attr(l.slice_start, "start"),
            attr(l.slice_stop, "stop"),
            attr(l.slice_step, "step"),
        ],
        _ => &[],
    };
    let mut out = [(None, Label::Key); MAX_FIXED];
    out[..fields.len()].copy_from_slice(fields);
    out
}

/// `count` pointers at `addr`, read whole; the last one is read first, so that a garbage
/// length fails on an unmapped end before a big buffer is made for it.
fn read_pointers(mem: &impl ReadMemory, addr: u64, count: u64) -> Result<Vec<u8>, DecodeError> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let bytes = count
        .checked_mul(8)
        .ok_or(DecodeError::invalid("array", addr))?;
    mem.read_u64(addr.wrapping_add(bytes - 8))?;
    Ok(mem.read_vec(addr, bytes as usize)?)
}

/// How many bytes cover 8-byte members at all `offsets`.
fn span(offsets: &[u64]) -> usize {
    offsets.iter().max().map_or(8, |m| *m as usize + 8)
}

/// Every pointer in `bytes`, labelled by its position.
fn pointers(bytes: &[u8], refs: &mut Vec<Reference>, label: fn(u32) -> Label) {
    for (i, chunk) in bytes.chunks_exact(8).enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        refs.push((u64::from_le_bytes(word), label(i as u32)));
    }
}

/// The bytes a str at `addr` (whose first [`HEADER`] bytes are `header`) keeps apart from
/// its characters that `str.__sizeof__` counts: its UTF-8 form once made (`PyUnicode_AsUTF8`)
/// unless it is its characters (a compact ASCII string's always is), and on 3.6-3.11 its
/// `wchar_t` form once made (`PyUnicode_AsUnicode`) unless it is its characters (4-byte
/// characters), as `_PyUnicode_HAS_UTF8_MEMORY` and `_PyUnicode_HAS_WSTR_MEMORY` say. An
/// unreadable member counts nothing.
fn str_buffers(mem: &impl ReadMemory, l: &Layout, addr: u64, header: &[u8]) -> u64 {
    let state = field_u32(header, l.unicode_state);
    let length = field_u64(header, l.unicode_length);
    let compact = (state >> 5) & 1 == 1;
    let ascii = compact && (state >> 6) & 1 == 1;
    let read = |at: u64| mem.read_u64(addr.wrapping_add(at)).unwrap_or(0);
    let data = match (compact, ascii) {
        (true, true) => addr.wrapping_add(l.unicode_ascii_size),
        (true, false) => addr.wrapping_add(l.unicode_compact_size),
        _ => read(l.unicode_data),
    };
    // A buffer of `units` code units of `width` bytes and its terminating NUL, if plausible.
    let buffer = |units: u64, width: u64| {
        if units < 1 << 40 {
            (units + 1) * width
        } else {
            0
        }
    };
    let mut size = 0;
    if let (Some(wstr_at), Some(wstr_length_at)) = (l.unicode_wstr, l.unicode_wstr_length) {
        let wstr = read(wstr_at);
        if wstr != 0 && wstr != data {
            // A compact ASCII string has no `wstr_length`: its wide form is its length.
            let units = if ascii { length } else { read(wstr_length_at) };
            size += buffer(units, WCHAR_SIZE);
        }
    }
    if !ascii {
        let utf8 = read(l.unicode_utf8);
        if utf8 != 0 && utf8 != data {
            size += buffer(read(l.unicode_utf8_length), 1);
        }
    }
    size
}

/// numpy's `PyArrayObject_fields` (numpy 1.7 to 2.x, 64-bit, after a 16-byte object
/// header): the data pointer, the dimension count, the dimensions and strides arrays, the
/// array it views, its dtype and its flags; and `PyArray_Descr.type_num` (the same offset in
/// numpy 1.x and 2.x).
const NDARRAY_DATA: u64 = 16;
const NDARRAY_ND: u64 = 24;
const NDARRAY_DIMENSIONS: u64 = 32;
const NDARRAY_STRIDES: u64 = 40;
const NDARRAY_BASE: u64 = 48;
const NDARRAY_DESCR: u64 = 56;
const NDARRAY_FLAGS: u64 = 64;
const DESCR_TYPE_NUM: u64 = 28;
/// `NPY_ARRAY_C_CONTIGUOUS`, `NPY_ARRAY_F_CONTIGUOUS`, `NPY_ARRAY_OWNDATA`, `NPY_OBJECT`,
/// and the most dimensions an array may have (`NPY_MAXDIMS`, 64 from numpy 2.0).
const NPY_C_CONTIGUOUS: u32 = 0x1;
const NPY_F_CONTIGUOUS: u32 = 0x2;
const NPY_OWNDATA: u32 = 0x4;
const NPY_OBJECT: u32 = 17;
const NPY_MAXDIMS: u64 = 64;

/// What the walker takes from a `numpy.ndarray`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NumpyArray {
    /// Its elements (the product of its dimensions).
    elements: u64,
    /// The buffer it owns, in bytes (0 for a view, whose `base` owns it).
    owned_bytes: u64,
    /// The data pointer.
    data: u64,
    /// The object it views (another array, `bytes`, an `mmap`), or 0.
    base: u64,
    /// For an object array that owns its buffer, the item pointers in it.
    object_items: Option<u64>,
}

/// The ndarray at `addr`. An array that owns its data allocated it contiguous (C or Fortran
/// order), so its element size is the stride of its innermost (outermost) dimension longer
/// than 1, and the buffer that many bytes per element; one with at most one element counts
/// no buffer (its element size is in its dtype, whose layout numpy 2 changed). A large buffer
/// counts only if its last byte is readable memory.
fn numpy_array(mem: &impl ReadMemory, addr: u64) -> Result<NumpyArray, DecodeError> {
    let at = |offset: u64| addr.wrapping_add(offset);
    let data = mem.read_u64(at(NDARRAY_DATA))?;
    let nd = u64::from(mem.read_u32(at(NDARRAY_ND))?);
    let flags = mem.read_u32(at(NDARRAY_FLAGS))?;
    let base = mem.read_u64(at(NDARRAY_BASE))?;
    if nd > NPY_MAXDIMS {
        return Err(DecodeError::invalid("numpy array", addr));
    }
    let dims = read_words(mem, mem.read_u64(at(NDARRAY_DIMENSIONS))?, nd)?;
    let strides = read_words(mem, mem.read_u64(at(NDARRAY_STRIDES))?, nd)?;
    let elements = dims
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= 1 << 48)
        .ok_or(DecodeError::invalid("numpy array", addr))?;
    let mut array = NumpyArray {
        elements,
        owned_bytes: 0,
        data,
        base,
        object_items: None,
    };
    if flags & NPY_OWNDATA == 0 || data == 0 {
        return Ok(array);
    }
    let longer = |i: &usize| dims[*i] > 1;
    let axis = if flags & NPY_C_CONTIGUOUS != 0 {
        (0..dims.len()).rev().find(longer)
    } else if flags & NPY_F_CONTIGUOUS != 0 {
        (0..dims.len()).find(longer)
    } else {
        None
    };
    let Some(axis) = axis else {
        return Ok(array);
    };
    let element = (strides[axis] as i64).unsigned_abs();
    let bytes = element
        .checked_mul(elements)
        .filter(|&b| b <= 1 << 48)
        .ok_or(DecodeError::invalid("numpy array", addr))?;
    if bytes > LARGE_OBJECT {
        mem.read_u8(data.wrapping_add(bytes - 1))?;
    }
    array.owned_bytes = bytes;
    let descr = mem.read_u64(at(NDARRAY_DESCR))?;
    if element == 8 && mem.read_u32(descr.wrapping_add(DESCR_TYPE_NUM))? == NPY_OBJECT {
        if elements > MAX_ITEMS {
            return Err(DecodeError::invalid("numpy object array", addr));
        }
        array.object_items = Some(elements);
    }
    Ok(array)
}

/// `count` 8-byte words at `addr` (none for 0).
fn read_words(mem: &impl ReadMemory, addr: u64, count: u64) -> Result<Vec<u64>, DecodeError> {
    let bytes = read_pointers(mem, addr, count)?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

/// `sizeof(wchar_t)` on Linux.
const WCHAR_SIZE: u64 = 4;

/// The in-object size of an object whose first [`HEADER`] bytes are `header`: basic size,
/// variable part, GC header and pre-header (out-of-line tables are added by the readers).
fn base_size(l: &Layout, info: &TypeInfo, header: &[u8]) -> u64 {
    let ob_size = field_u64(header, l.var_size) as i64;
    let body = match info.kind {
        Kind::Str => {
            let length = field_u64(header, l.unicode_length).min(1 << 40);
            let state = field_u32(header, l.unicode_state);
            let kind = u64::from((state >> 2) & 7).max(1);
            let compact = (state >> 5) & 1 == 1;
            let ascii = (state >> 6) & 1 == 1;
            match (compact, ascii) {
                (true, true) => l.unicode_ascii_size + length + 1,
                (true, false) => l.unicode_compact_size + (length + 1) * kind,
                // Not compact (an instance of a subclass of `str`): `str.__sizeof__` counts
                // `PyUnicodeObject` (the compact struct and its data pointer), whatever the
                // type's own size, and the characters allocated apart.
                _ => l.unicode_compact_size + 8 + (length + 1) * kind,
            }
        }
        Kind::Int => {
            let digits = match l.long_lv_tag {
                Some(at) => (field_u64(header, at) >> 3).max(1),
                None => ob_size.unsigned_abs().max(1),
            };
            info.basicsize + info.itemsize * digits.min(1 << 20)
        }
        // A bytes object's size is its length (plus its terminating NUL, in `basicsize`),
        // however large.
        Kind::Bytes if ob_size >= 0 => info.basicsize + ob_size.unsigned_abs().min(1 << 40),
        // A bytearray's buffer, `ob_alloc` bytes (the word after `ob_size` in every version),
        // counts as `sys.getsizeof` counts it. 3.15 keeps it in a bytes object only the
        // bytearray refers to, which the walk does not follow: counted here once, without that
        // object's header (33 bytes, which 3.15's `sys.getsizeof` adds).
        Kind::ByteArray => {
            let allocated = field_u64(header, l.var_size + 8);
            info.basicsize + if allocated < 1 << 40 { allocated } else { 0 }
        }
        // 3.11+: the bytecode is inline, `ob_size` code units, the whole rounded up to a
        // pointer as `code.__sizeof__` does (`_PyObject_VAR_SIZE`).
        Kind::Code if info.itemsize > 0 && ob_size.unsigned_abs() <= MAX_VAR_ITEMS => {
            (info.basicsize + info.itemsize * ob_size.unsigned_abs() + 7) & !7
        }
        // A class: `type.__sizeof__` counts `PyHeapTypeObject`, not the `__slots__` members
        // that follow it (`ob_size` of them); its shared keys are added when it is read, and
        // a built-in (static) type is sized then ([`static_type_size`]).
        Kind::Type => l.heaptype_size,
        // Some variable-size types keep something else where `ob_size` would be (3.11's
        // generators): an implausible count adds nothing.
        _ if info.itemsize > 0 && ob_size.unsigned_abs() <= MAX_VAR_ITEMS => {
            info.basicsize + info.itemsize * ob_size.unsigned_abs()
        }
        _ => info.basicsize,
    };
    body + pre_header(l, info)
}

/// What `sys.getsizeof` adds before an object of type `info`: the GC header, and the
/// pre-header of a managed dict (3.11+) or weak reference list (3.12+: a class deriving
/// from a built-in type that has a `__dict__` but no weak references, such as an exception).
fn pre_header(l: &Layout, info: &TypeInfo) -> u64 {
    let gc = if info.is_gc() { l.gc_head_size } else { 0 };
    let capabilities = l.capabilities();
    let managed = (capabilities.managed_dicts && info.flags & flags::MANAGED_DICT != 0)
        || (capabilities.managed_weakrefs && info.flags & flags::MANAGED_WEAKREF != 0);
    let preheader = if managed { 16 } else { 0 };
    gc + preheader
}

/// `sys.getsizeof` of a built-in (static) type object whose metatype is `meta`:
/// `sizeof(PyTypeObject)`, without the GC header its metatype would add (a static type is not
/// collected), except in 3.11 and 3.12, whose `sys.getsizeof` adds the metatype's pre-header to
/// every object (3.13 leaves it off static types again).
fn static_type_size(l: &Layout, meta: &TypeInfo) -> u64 {
    let pre = if l.capabilities().static_types_sized_with_pre_header {
        pre_header(l, meta)
    } else {
        0
    };
    l.type_size + pre
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attach::SliceMemory;
    use crate::heap::dominators::dominators;
    use crate::python::layouts::{SUPPORTED, layout_for};

    /// Names of the type objects planted in the garbage, one per reader.
    const PLANTED: &[&str] = &[
        "list",
        "tuple",
        "dict",
        "set",
        "collections.deque",
        "module",
        "function",
        "cell",
        "method",
        "code",
        "property",
        "classmethod",
        "staticmethod",
        "builtin_function_or_method",
        "builtin_method",
        "method-wrapper",
        "member_descriptor",
        "weakref.ReferenceType",
        "generator",
        "coroutine",
        "frame",
        "type",
        "str",
        "int",
        "something",
        "collections.OrderedDict",
        "types.SimpleNamespace",
        "mappingproxy",
        "types.GenericAlias",
        "datetime.datetime",
        "datetime.time",
        "datetime.timezone",
        "traceback",
        "types.UnionType",
        "slice",
        "ValueError",
        "zoneinfo.ZoneInfo",
        "numpy.ndarray",
        "object",
    ];
    /// Where the planted types, their metatype and their names live (past the garbage).
    const TYPES_AT: u64 = 0x1_0000;
    const META_AT: u64 = 0x2_0000;
    const NAMES_AT: u64 = 0x2_1000;

    fn put(bytes: &mut [u8], at: u64, word: u64) {
        bytes[at as usize..at as usize + 8].copy_from_slice(&word.to_le_bytes());
    }

    /// Memory of pseudo-random words (a third pointers back into it, a sixth pointers to
    /// type objects planted after it, so that garbage looks like objects of every kind the
    /// walker reads): whatever the walker makes of it, it must end without panicking.
    fn garbage(layout: &Layout, seed: u64, base: u64, len: u64) -> SliceMemory {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut bytes = vec![0u8; (NAMES_AT + 0x1000) as usize];
        for at in (0..len).step_by(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let word = match x % 6 {
                0 | 1 => base + (x >> 8) % len / 64 * 64,
                2 => base + TYPES_AT + (x >> 8) % PLANTED.len() as u64 * 0x400,
                3 => (x >> 8) % 64,
                _ => x,
            };
            put(&mut bytes, at, word);
        }
        // Every 64 bytes an object header: a type, a small size; its body stays garbage.
        for at in (0..len).step_by(64) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            put(&mut bytes, at, 1);
            let ty = TYPES_AT + (x >> 8) % PLANTED.len() as u64 * 0x400;
            put(&mut bytes, at + layout.object_type, base + ty);
            put(&mut bytes, at + layout.var_size, x % 20);
        }
        put(
            &mut bytes,
            META_AT + layout.type_flags,
            flags::TYPE_SUBCLASS,
        );
        for (k, name) in PLANTED.iter().enumerate() {
            let ty = TYPES_AT + k as u64 * 0x400;
            let name_at = NAMES_AT + k as u64 * 32;
            bytes[name_at as usize..name_at as usize + name.len()].copy_from_slice(name.as_bytes());
            put(&mut bytes, ty, 1);
            put(&mut bytes, ty + layout.object_type, base + META_AT);
            put(&mut bytes, ty + layout.type_name, base + name_at);
            put(&mut bytes, ty + layout.type_basicsize, 48);
            put(&mut bytes, ty + layout.type_itemsize, 8 * (k as u64 % 2));
            let type_flag = match *name {
                "type" => flags::TYPE_SUBCLASS,
                "ValueError" => flags::BASE_EXC_SUBCLASS,
                _ => 0,
            };
            put(
                &mut bytes,
                ty + layout.type_flags,
                flags::HAVE_GC | type_flag,
            );
        }
        let mut mem = SliceMemory::new();
        mem.map(base, bytes);
        mem
    }

    #[test]
    fn garbage_memory_ends_the_walk_without_panicking() {
        let base = 0x7f00_0000_0000u64;
        let mut most = 0usize;
        for (i, &(major, minor)) in SUPPORTED.iter().enumerate() {
            let layout = layout_for(major, minor).expect("layout");
            for seed in 0..20u64 {
                let mem = garbage(layout, seed * 31 + i as u64, base, 0x8000);
                let mut walker = Walker::new(&mem, layout);
                let lists = GcLists {
                    generations: vec![base, base + 0x100, base + 0x200],
                    permanent: Some(base + 0x300),
                };
                walker.add_gc_lists(&lists).expect("no process to lose");
                let roots = (0..8)
                    .map(|r| Root {
                        name: format!("m{r}"),
                        addr: base + 0x1000 * r,
                    })
                    .collect();
                let graph = walker.walk(roots).expect("no process to lose");
                // No object claims far more memory than there is (a torn or garbage `str`
                // length, list capacity or variable size would claim terabytes): what is
                // over LARGE_OBJECT was checked to end in readable memory.
                let largest = graph.shallow.iter().max().copied().unwrap_or(0);
                assert!(
                    largest <= LARGE_OBJECT + 0x8000,
                    "a {largest}-byte object in 32 KiB"
                );
                let d = dominators(graph.len(), &graph.edges, &graph.shallow);
                assert_eq!(d.idom.len(), graph.len());
                most = most.max(graph.len());
            }
        }
        // The garbage did make objects to follow, not only rejected pointers.
        assert!(most > 20, "largest garbage graph: {most} nodes");
    }
}
