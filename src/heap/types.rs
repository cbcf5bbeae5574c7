//! What the walker knows about each type object it meets: its name as a user writes it, which
//! of the walker's per-type readers applies ([`Kind`]), its sizes, and where its instances
//! keep references (`__dict__`, `__slots__`). Read once per type and cached. It decides
//! nothing about reachability or reporting.

use crate::attach::ReadMemory;
use crate::python::layout::Layout;
use crate::python::objects::{dict_get_str, read_str};
use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

/// `Py_TPFLAGS_*` bits the walker reads (the same in 3.6–3.15 where they exist).
pub mod flags {
    /// 3.13+: instance attributes stored inline after the object.
    pub const INLINE_VALUES: u64 = 1 << 2;
    /// 3.12+: the weak reference list lives before the GC header.
    pub const MANAGED_WEAKREF: u64 = 1 << 3;
    /// 3.11+: the instance dict (or its values) lives before the GC header.
    pub const MANAGED_DICT: u64 = 1 << 4;
    /// Allocated on the heap (a class statement's type).
    pub const HEAPTYPE: u64 = 1 << 9;
    /// Instances are tracked by the garbage collector.
    pub const HAVE_GC: u64 = 1 << 14;
    /// Subclass of `int`.
    pub const LONG_SUBCLASS: u64 = 1 << 24;
    /// Subclass of `list`.
    pub const LIST_SUBCLASS: u64 = 1 << 25;
    /// Subclass of `tuple`.
    pub const TUPLE_SUBCLASS: u64 = 1 << 26;
    /// Subclass of `bytes`.
    pub const BYTES_SUBCLASS: u64 = 1 << 27;
    /// Subclass of `str`.
    pub const UNICODE_SUBCLASS: u64 = 1 << 28;
    /// Subclass of `dict`.
    pub const DICT_SUBCLASS: u64 = 1 << 29;
    /// Subclass of `BaseException`.
    pub const BASE_EXC_SUBCLASS: u64 = 1 << 30;
    /// Subclass of `type` (the type of a type object).
    pub const TYPE_SUBCLASS: u64 = 1 << 31;
}

/// `T_OBJECT` and `T_OBJECT_EX` (`Py_T_OBJECT_EX`): a member holding an object reference.
const MEMBER_OBJECT: i32 = 6;
const MEMBER_OBJECT_EX: i32 = 16;
/// Bounds on what one type's description may claim.
const MAX_MEMBERS: u64 = 1024;
const MAX_BASES: usize = 64;
const MAX_NAME: usize = 256;

/// How the walker reads the references of an object of this type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `list` (and subclasses).
    List,
    /// `tuple` (and subclasses).
    Tuple,
    /// `dict` (and subclasses).
    Dict,
    /// `collections.OrderedDict` (and subclasses): a dict, its node list, and (for the
    /// built-in type itself) its instance `__dict__`.
    OrderedDict,
    /// `set`, `frozenset`.
    Set,
    /// `collections.deque`.
    Deque,
    /// `module`.
    Module,
    /// `function`.
    Function,
    /// `cell`.
    Cell,
    /// A bound `method`.
    Method,
    /// `code`: constants, names, file and line tables.
    Code,
    /// `property`: `fget`, `fset`, `fdel`, `__doc__` (3.10+ also its name).
    Property,
    /// `classmethod`: its function and `__dict__`.
    ClassMethod,
    /// `staticmethod`: its function and `__dict__`.
    StaticMethod,
    /// `builtin_function_or_method`: `__self__` and `__module__`.
    BuiltinFunction,
    /// `builtin_method` (3.9+, a method of a heap type defined in C): as
    /// [`Kind::BuiltinFunction`], and its defining class.
    BuiltinMethod,
    /// `method-wrapper`: the wrapper descriptor it binds, and `__self__`.
    MethodWrapper,
    /// The descriptors of built-in types (member, getset, method, class method and wrapper
    /// descriptors share `PyDescr_COMMON`): `__objclass__`, `__name__`, `__qualname__`.
    Descriptor,
    /// `generator`: name, qualified name, code, and the suspended frame's locals (≤3.10 its
    /// frame object, 3.11+ the frame embedded in it).
    Generator,
    /// `coroutine`: as a generator, and its origin.
    Coroutine,
    /// `async_generator`: as a generator, and its finalizer.
    AsyncGenerator,
    /// `frame` objects: caller (`f_back`), trace function, and what the frame holds (code,
    /// function, globals, builtins, locals dict and local slots): ≤3.10 in the object
    /// itself; 3.11+ in the interpreter frame it owns once its call returned (while the
    /// call runs, or in a generator, the thread or the generator holds that frame, and it
    /// is walked there).
    Frame,
    /// `traceback`: `tb_next` and `tb_frame`.
    Traceback,
    /// `BaseException` and its subclasses: `args`, `__traceback__`, `__context__`,
    /// `__cause__`, 3.11+ `__notes__`, its `__dict__`, and the object members of the C
    /// types it derives from (`StopIteration.value`, `OSError.filename`, …).
    Exception,
    /// `zoneinfo.ZoneInfo` (3.9+): its key, file repr, and the offsets and names of its
    /// local time types (kept in C arrays, which `sys.getsizeof` does not count).
    ZoneInfo,
    /// `types.UnionType` (3.10–3.13) / `typing.Union` (3.14+), `int | str`: `__args__`,
    /// `__parameters__` (3.14+ also its hashable and unhashable arguments apart).
    Union,
    /// `slice`: `start`, `stop`, `step`.
    Slice,
    /// Weak references and proxies: the callback only. The referent is a weak reference,
    /// which keeps nothing alive: not an edge of the graph.
    WeakRef,
    /// `types.SimpleNamespace`: its attribute dict.
    Namespace,
    /// `types.MappingProxyType` (`mappingproxy`): the mapping it shows.
    MappingProxy,
    /// `types.GenericAlias` (3.9+): `__origin__`, `__args__`, `__parameters__`.
    GenericAlias,
    /// `datetime.datetime`: its `tzinfo`, when it has one.
    DateTime,
    /// `datetime.time`: its `tzinfo`, when it has one.
    Time,
    /// `datetime.timezone`: its offset (a `timedelta`) and name.
    TimeZone,
    /// `numpy.ndarray` (and subclasses): the buffer it owns (`nbytes`, allocated apart,
    /// which `sys.getsizeof` counts too), the array it views (`base`), and an object array's
    /// items.
    NumpyArray,
    /// `type` and metaclass instances: classes.
    Type,
    /// `str`: no references, variable size.
    Str,
    /// `int`, `bool`: no references, variable size.
    Int,
    /// `bytes`: no references, variable size.
    Bytes,
    /// `bytearray`: no references; its buffer (`ob_alloc` bytes) lies outside it.
    ByteArray,
    /// Other types known to hold no references (`float`, `NoneType`, …).
    Leaf,
    /// An instance of a class statement's type: `__dict__` and `__slots__`.
    Instance,
    /// A type whose references pmt does not know: counted, not followed.
    Unknown,
}

/// One type object, as read from the target.
#[derive(Debug, Clone)]
pub struct TypeInfo {
    /// The type object's address.
    pub address: u64,
    /// `module.QualName` for classes, `tp_name` for built-in types (as `gc` users see them).
    pub name: String,
    /// Which reader applies.
    pub kind: Kind,
    /// `tp_flags`.
    pub flags: u64,
    /// `tp_basicsize`.
    pub basicsize: u64,
    /// `tp_itemsize`.
    pub itemsize: u64,
    /// `tp_dictoffset` (0: no instance dict; negative: at the end of a variable-size object).
    pub dictoffset: i64,
    /// Offsets and names of the object members (`__slots__`) of the type and its bases.
    pub slots: Vec<(u64, String)>,
    /// `ht_cached_keys` of a class: the keys shared by its instances' split dicts.
    pub cached_keys: u64,
    /// For a class, its own (the instance) reader applies on top of a built-in base's:
    /// a subclass of `dict` is walked as a dict and as an instance.
    pub instance: bool,
}

impl TypeInfo {
    /// Whether instances carry a GC header (and live on the collector's lists).
    pub fn is_gc(&self) -> bool {
        self.flags & flags::HAVE_GC != 0
    }
}

/// Type objects read so far, by address; `None` for an address that is not a type.
#[derive(Debug, Default)]
pub struct TypeTable {
    by_addr: HashMap<u64, Option<u32>>,
    types: Vec<Arc<TypeInfo>>,
}

impl TypeTable {
    /// The index of the type at `addr`, reading it the first time; `None` when `addr` is
    /// not a readable type object (a torn or garbage object's type pointer).
    pub fn lookup(&mut self, mem: &impl ReadMemory, layout: &Layout, addr: u64) -> Option<u32> {
        if let Some(known) = self.by_addr.get(&addr) {
            return *known;
        }
        let info = read_type(mem, layout, addr);
        let index = info.map(|info| {
            self.types.push(Arc::new(info));
            (self.types.len() - 1) as u32
        });
        self.by_addr.insert(addr, index);
        index
    }

    /// The type at `index`.
    pub fn get(&self, index: u32) -> &TypeInfo {
        &self.types[index as usize]
    }

    /// The type at `index`, shared (for a reader that holds it while the table grows).
    pub fn shared(&self, index: u32) -> Arc<TypeInfo> {
        Arc::clone(&self.types[index as usize])
    }

    /// How many types were read.
    pub fn len(&self) -> usize {
        self.types.len()
    }
}

fn is_type_object(mem: &impl ReadMemory, layout: &Layout, addr: u64) -> Option<u64> {
    if addr == 0 || !addr.is_multiple_of(8) {
        return None;
    }
    let meta = mem.read_u64(addr.wrapping_add(layout.object_type)).ok()?;
    let meta_flags = mem.read_u64(meta.wrapping_add(layout.type_flags)).ok()?;
    if meta_flags & flags::TYPE_SUBCLASS == 0 {
        return None;
    }
    mem.read_u64(addr.wrapping_add(layout.type_flags)).ok()
}

/// A NUL-terminated C string of at most [`MAX_NAME`] bytes.
fn c_string(mem: &impl ReadMemory, addr: u64) -> Option<String> {
    let mut buf = [0u8; MAX_NAME];
    for len in [MAX_NAME, 64, 16] {
        if mem.read(addr, &mut buf[..len]).is_ok() {
            let end = buf[..len].iter().position(|&b| b == 0)?;
            return std::str::from_utf8(&buf[..end]).ok().map(str::to_string);
        }
    }
    None
}

fn read_type(mem: &impl ReadMemory, layout: &Layout, addr: u64) -> Option<TypeInfo> {
    let flags = is_type_object(mem, layout, addr)?;
    let tp_name = c_string(mem, mem.read_u64(addr.wrapping_add(layout.type_name)).ok()?)?;
    let basicsize = mem
        .read_u64(addr.wrapping_add(layout.type_basicsize))
        .ok()?;
    let itemsize = mem.read_u64(addr.wrapping_add(layout.type_itemsize)).ok()?;
    let dictoffset = mem
        .read_u64(addr.wrapping_add(layout.type_dictoffset))
        .ok()? as i64;
    if basicsize > 1 << 20 || itemsize > 1 << 16 {
        return None;
    }
    let heap = flags & flags::HEAPTYPE != 0;
    let name = if heap {
        class_name(mem, layout, addr).unwrap_or(tp_name)
    } else {
        tp_name
    };
    let mut own_members = None;
    let (kind, instance) = match builtin_kind(&name, flags, heap) {
        // An `object()` itself (a sentinel) holds nothing; only this exact type: what a C type
        // deriving from `object` adds is not known (not a base the readers infer from).
        None if !heap && name == "object" => (Kind::Leaf, false),
        // A dict by its flags; a subclass of `OrderedDict` is read (and sized) as one.
        Some(Kind::Dict) if heap => (
            inherited_kind(mem, layout, addr).unwrap_or(Kind::Dict),
            true,
        ),
        Some(kind) => (kind, heap && !EXTENSION_HEAP_TYPES.contains(&name.as_str())),
        None if heap => (
            inherited_kind(mem, layout, addr).unwrap_or(Kind::Instance),
            true,
        ),
        None => match static_subclass_kind(mem, layout, addr)
            .or_else(|| other_base_kind(mem, layout, addr).map(|kind| (kind, Vec::new())))
        {
            Some((kind, members)) => {
                own_members = Some(members);
                (kind, true)
            }
            None => (Kind::Unknown, false),
        },
    };
    // An exception's members are those of every type it derives from, C types included
    // (`OSError.filename`); a class's, those of its classes; a C type deriving from a known
    // one, those it adds.
    let slots = match own_members {
        Some(members) => members,
        None if instance || kind == Kind::Exception => {
            slots_of(mem, layout, addr, kind == Kind::Exception)
        }
        None => Vec::new(),
    };
    let cached_keys = match layout.heaptype_cached_keys {
        Some(at) if heap => mem.read_u64(addr.wrapping_add(at)).unwrap_or(0),
        _ => 0,
    };
    Some(TypeInfo {
        address: addr,
        name,
        kind,
        flags,
        basicsize,
        itemsize,
        dictoffset,
        slots,
        cached_keys,
        instance,
    })
}

/// `module.QualName` of a class: `__module__` from its dict, `ht_qualname`.
fn class_name(mem: &impl ReadMemory, layout: &Layout, addr: u64) -> Option<String> {
    let qualname = read_str(
        mem,
        layout,
        mem.read_u64(addr.wrapping_add(layout.heaptype_qualname))
            .ok()?,
    )
    .ok()?;
    let dict = mem.read_u64(addr.wrapping_add(layout.type_dict)).ok()?;
    let module = dict_get_str(mem, layout, dict, "__module__")
        .ok()
        .flatten()
        .and_then(|m| read_str(mem, layout, m).ok());
    Some(match module {
        Some(module) if module != "builtins" => format!("{module}.{qualname}"),
        _ => qualname,
    })
}

/// Built-in types that an extension module makes as heap types in some versions
/// (`_collections` and `_zoneinfo` from 3.12 on): known by name, not walked as classes.
const EXTENSION_HEAP_TYPES: &[&str] = &["collections.deque", "zoneinfo.ZoneInfo"];

/// The reader of a built-in type, by its name, or for a class by the built-in it derives from.
fn builtin_kind(name: &str, type_flags: u64, heap: bool) -> Option<Kind> {
    if heap && !EXTENSION_HEAP_TYPES.contains(&name) {
        let by_flag = [
            (flags::TYPE_SUBCLASS, Kind::Type),
            (flags::LIST_SUBCLASS, Kind::List),
            (flags::TUPLE_SUBCLASS, Kind::Tuple),
            (flags::DICT_SUBCLASS, Kind::Dict),
            (flags::BASE_EXC_SUBCLASS, Kind::Exception),
            // Sized by their own rules (an int's digit count is no `ob_size` from 3.12 on).
            (flags::LONG_SUBCLASS, Kind::Int),
            (flags::BYTES_SUBCLASS, Kind::Bytes),
            (flags::UNICODE_SUBCLASS, Kind::Str),
        ];
        return by_flag
            .iter()
            .find(|(bit, _)| type_flags & bit != 0)
            .map(|(_, kind)| *kind);
    }
    Some(match name {
        "list" => Kind::List,
        "tuple" => Kind::Tuple,
        "dict" => Kind::Dict,
        "collections.OrderedDict" => Kind::OrderedDict,
        "types.SimpleNamespace" => Kind::Namespace,
        "mappingproxy" => Kind::MappingProxy,
        "types.GenericAlias" => Kind::GenericAlias,
        "datetime.datetime" => Kind::DateTime,
        "datetime.time" => Kind::Time,
        "datetime.timezone" => Kind::TimeZone,
        "datetime.date" | "datetime.timedelta" => Kind::Leaf,
        "set" | "frozenset" => Kind::Set,
        "collections.deque" => Kind::Deque,
        "zoneinfo.ZoneInfo" => Kind::ZoneInfo,
        "numpy.ndarray" => Kind::NumpyArray,
        "module" => Kind::Module,
        "function" => Kind::Function,
        "cell" => Kind::Cell,
        "method" => Kind::Method,
        "code" => Kind::Code,
        "property" => Kind::Property,
        "classmethod" => Kind::ClassMethod,
        "staticmethod" => Kind::StaticMethod,
        "builtin_function_or_method" => Kind::BuiltinFunction,
        "builtin_method" => Kind::BuiltinMethod,
        "method-wrapper" => Kind::MethodWrapper,
        "member_descriptor"
        | "getset_descriptor"
        | "method_descriptor"
        | "wrapper_descriptor"
        | "classmethod_descriptor" => Kind::Descriptor,
        // `tp_name` became `weakref.ReferenceType`, … in 3.10 (`weakref`, … before).
        "weakref.ReferenceType"
        | "weakref.ProxyType"
        | "weakref.CallableProxyType"
        | "weakref"
        | "weakproxy"
        | "weakcallableproxy" => Kind::WeakRef,
        "generator" => Kind::Generator,
        "coroutine" => Kind::Coroutine,
        "async_generator" => Kind::AsyncGenerator,
        "frame" => Kind::Frame,
        "traceback" => Kind::Traceback,
        // `typing.Union` from 3.14 on.
        "types.UnionType" | "typing.Union" => Kind::Union,
        "slice" => Kind::Slice,
        "type" => Kind::Type,
        "str" => Kind::Str,
        "int" | "bool" => Kind::Int,
        "bytes" => Kind::Bytes,
        "bytearray" => Kind::ByteArray,
        "float" | "complex" | "NoneType" | "ellipsis" | "NotImplementedType" => Kind::Leaf,
        _ if type_flags & flags::TYPE_SUBCLASS != 0 => Kind::Type,
        _ if type_flags & flags::BASE_EXC_SUBCLASS != 0 => Kind::Exception,
        _ => return None,
    })
}

/// For a class no `tp_flags` bit classifies, the reader of the built-in type it derives from
/// where that reader applies to subclasses as they are (same struct prefix, references at
/// the same offsets): `set`, `module`, `collections.deque`, weak references, `property`,
/// `classmethod`, `staticmethod`, `OrderedDict`, `GenericAlias`, `datetime.datetime`,
/// `datetime.time`, `zoneinfo.ZoneInfo` and `numpy.ndarray`. `None` for the rest (instances
/// of `object` subclasses, and of `dict` subclasses other than `OrderedDict`'s).
fn inherited_kind(mem: &impl ReadMemory, layout: &Layout, addr: u64) -> Option<Kind> {
    let mut ty = mem.read_u64(addr.wrapping_add(layout.type_base)).ok()?;
    for _ in 0..MAX_BASES {
        let type_flags = is_type_object(mem, layout, ty)?;
        let name = c_string(mem, mem.read_u64(ty.wrapping_add(layout.type_name)).ok()?)?;
        if type_flags & flags::HEAPTYPE == 0 || EXTENSION_HEAP_TYPES.contains(&name.as_str()) {
            return builtin_kind(&name, type_flags, false).filter(|kind| {
                matches!(
                    kind,
                    Kind::Set
                        | Kind::Module
                        | Kind::Deque
                        | Kind::WeakRef
                        | Kind::Property
                        | Kind::ClassMethod
                        | Kind::StaticMethod
                        | Kind::OrderedDict
                        | Kind::GenericAlias
                        | Kind::DateTime
                        | Kind::Time
                        | Kind::ZoneInfo
                        | Kind::NumpyArray
                )
            });
        }
        ty = mem.read_u64(ty.wrapping_add(layout.type_base)).ok()?;
    }
    None
}

/// The object members of the class at `addr` and its class bases: `__slots__` entries; with
/// `through_static`, also those its built-in (static) bases declare (`tp_members`).
fn slots_of(
    mem: &impl ReadMemory,
    layout: &Layout,
    addr: u64,
    through_static: bool,
) -> Vec<(u64, String)> {
    let mut slots = Vec::new();
    let mut ty = addr;
    for _ in 0..MAX_BASES {
        let Some(type_flags) = is_type_object(mem, layout, ty) else {
            break;
        };
        if type_flags & flags::HEAPTYPE == 0 && !through_static {
            break;
        }
        members_of(mem, layout, ty, &mut slots);
        ty = mem.read_u64(ty.wrapping_add(layout.type_base)).unwrap_or(0);
    }
    slots
}

/// Adds to `slots` the object members (`T_OBJECT`, `T_OBJECT_EX`) the type at `ty` declares
/// in `tp_members`, but `__dict__`, `__weakref__` and offsets already there.
fn members_of(mem: &impl ReadMemory, layout: &Layout, ty: u64, slots: &mut Vec<(u64, String)>) {
    let members = mem
        .read_u64(ty.wrapping_add(layout.type_members))
        .unwrap_or(0);
    for i in 0..MAX_MEMBERS {
        if members == 0 {
            break;
        }
        let at = members.wrapping_add(i * layout.member_def_size);
        let Ok(name_ptr) = mem.read_u64(at) else {
            break;
        };
        if name_ptr == 0 {
            break;
        }
        let kind = mem
            .read_u32(at.wrapping_add(layout.member_def_type))
            .unwrap_or(0) as i32;
        let offset = mem
            .read_u64(at.wrapping_add(layout.member_def_offset))
            .unwrap_or(0);
        if matches!(kind, MEMBER_OBJECT | MEMBER_OBJECT_EX)
            && offset < 1 << 20
            && let Some(name) = c_string(mem, name_ptr)
            && name != "__weakref__"
            && name != "__dict__"
            && !slots.iter().any(|(o, _)| *o == offset)
        {
            slots.push((offset, name));
        }
    }
}

/// For a built-in (static) type no name matches (a C or Cython type deriving from one pmt
/// knows: `collections.defaultdict`, pandas' `Timestamp`), the reader of the known type it
/// derives from, and the object members it and the types between declare, when what it adds
/// to that type's layout is known to hold nothing else pmt must follow: either its added
/// bytes are exactly those members, its `__dict__` and weak reference list pointers, or it
/// kept the known type's `tp_traverse` (it adds no reference the collector sees). `None`
/// otherwise (not followed, counted). A subclass of `tuple` only if it is a struct sequence
/// (`os.stat_result`, `sys.flags`: its type's dict says `n_fields`), whose fields past
/// `ob_size` (`st_atime`, …) are among its members.
fn static_subclass_kind(
    mem: &impl ReadMemory,
    layout: &Layout,
    addr: u64,
) -> Option<(Kind, Vec<(u64, String)>)> {
    let read = |ty: u64, at: u64| mem.read_u64(ty.wrapping_add(at)).ok();
    let basicsize = read(addr, layout.type_basicsize)?;
    let dictoffset = read(addr, layout.type_dictoffset)? as i64;
    let weaklist = read(addr, layout.type_weaklistoffset)?;
    let traverse = read(addr, layout.type_traverse)?;
    let mut members = Vec::new();
    let mut ty = addr;
    for _ in 0..MAX_BASES {
        members_of(mem, layout, ty, &mut members);
        ty = read(ty, layout.type_base)?;
        let type_flags = is_type_object(mem, layout, ty)?;
        let name = c_string(mem, read(ty, layout.type_name)?)?;
        if type_flags & flags::HEAPTYPE != 0 && !EXTENSION_HEAP_TYPES.contains(&name.as_str()) {
            return None;
        }
        let Some(kind) = builtin_kind(&name, type_flags, false) else {
            continue;
        };
        if kind == Kind::Tuple {
            let dict = read(addr, layout.type_dict)?;
            return dict_get_str(mem, layout, dict, "n_fields")
                .ok()
                .flatten()
                .map(|_| (kind, members));
        }
        if !matches!(
            kind,
            Kind::List
                | Kind::Dict
                | Kind::OrderedDict
                | Kind::Set
                | Kind::Deque
                | Kind::Module
                | Kind::WeakRef
                | Kind::Property
                | Kind::ClassMethod
                | Kind::StaticMethod
                | Kind::Namespace
                | Kind::GenericAlias
                | Kind::DateTime
                | Kind::Time
                | Kind::TimeZone
                | Kind::ZoneInfo
                | Kind::NumpyArray
                | Kind::Int
                | Kind::Str
                | Kind::Bytes
                | Kind::ByteArray
                | Kind::Leaf
        ) {
            return None;
        }
        let own = |at: u64, base: u64| u64::from(at != 0 && base == 0) * 8;
        let explained = members.len() as u64 * 8
            + own(u64::from(dictoffset > 0), read(ty, layout.type_dictoffset)?)
            + own(weaklist, read(ty, layout.type_weaklistoffset)?);
        let added = basicsize.checked_sub(read(ty, layout.type_basicsize)?)?;
        return (added == explained || traverse == read(ty, layout.type_traverse)?)
            .then_some((kind, members));
    }
    None
}

/// For a built-in (static) type whose `tp_base` chain reaches no type pmt knows but whose
/// `tp_bases` names one (numpy's `float64`: its `tp_base` is `numpy.floating`, and its
/// `tp_bases` also holds `float`), the reader of that known type, when reading the object as
/// that type is sound by CPython's layout rules: the `tp_base` chain (the solid base, which
/// fixes the layout) adds nothing to `object`'s header, the type's instances are the known
/// type's size (basic and item sizes equal), so its members lie where the known type's do,
/// and it holds no reference pmt would miss: for a type that holds none ([`Kind::Leaf`]:
/// `float`, `complex`) neither is collected (no `HAVE_GC`), for any other the collector
/// visits both with the same `tp_traverse`. `None` otherwise (not followed, counted).
fn other_base_kind(mem: &impl ReadMemory, layout: &Layout, addr: u64) -> Option<Kind> {
    let read = |ty: u64, at: u64| mem.read_u64(ty.wrapping_add(at)).ok();
    let own_flags = is_type_object(mem, layout, addr)?;
    let basicsize = read(addr, layout.type_basicsize)?;
    let itemsize = read(addr, layout.type_itemsize)?;
    let traverse = read(addr, layout.type_traverse)?;
    // The solid base chain: every type on it as big as `object`, the last one.
    let mut chain = Vec::new();
    let mut ty = read(addr, layout.type_base)?;
    for _ in 0..MAX_BASES {
        if ty == 0 {
            break;
        }
        is_type_object(mem, layout, ty)?;
        chain.push((
            read(ty, layout.type_basicsize)?,
            read(ty, layout.type_itemsize)?,
        ));
        ty = read(ty, layout.type_base)?;
    }
    let &(object_size, _) = chain.last()?;
    if ty != 0 || chain.iter().any(|&c| c != (object_size, 0)) {
        return None;
    }
    let bases = read(addr, layout.type_bases)?;
    let count = read(bases, layout.var_size)?;
    if count > MAX_BASES as u64 {
        return None;
    }
    for i in 0..count {
        let base = read(bases, layout.tuple_items + 8 * i)?;
        let Some(base_flags) = is_type_object(mem, layout, base) else {
            continue;
        };
        if base_flags & flags::HEAPTYPE != 0 {
            continue;
        }
        let Some(kind) = builtin_kind(
            &c_string(mem, read(base, layout.type_name)?)?,
            base_flags,
            false,
        ) else {
            continue;
        };
        let same_size = basicsize == read(base, layout.type_basicsize)?
            && itemsize == read(base, layout.type_itemsize)?;
        let no_more = match kind {
            Kind::Leaf => (own_flags | base_flags) & flags::HAVE_GC == 0,
            Kind::List
            | Kind::Dict
            | Kind::Set
            | Kind::Deque
            | Kind::Property
            | Kind::ClassMethod
            | Kind::StaticMethod
            | Kind::Namespace
            | Kind::GenericAlias
            | Kind::DateTime
            | Kind::Time
            | Kind::TimeZone => traverse != 0 && traverse == read(base, layout.type_traverse)?,
            _ => false,
        };
        if same_size && no_more {
            return Some(kind);
        }
    }
    None
}
