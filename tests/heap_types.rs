//! `pmt heap`'s live objects by type on a real program: networkx (from the venvs
//! `tests/packages/setup_venvs.sh` makes) builds a graph, runs algorithms on it and holds the
//! results (`tests/scripts/heap_networkx.py`); the target then counts its own objects with
//! `gc.get_objects()` and `sys.getsizeof` and holds still while pmt reads it.
//!
//! Like is compared with like: `gc.get_objects()` lists only the objects on the collector's
//! lists, so its counts are compared with pmt's `tracked` count of each type (objects pmt found
//! on those lists), for the 20 types it lists most of, within 1%. Bytes are compared, within
//! 1%, for those of the 20 types all of whose instances pmt found are tracked (pmt's bytes of
//! a type cover its untracked instances too, which `gc.get_objects()` does not list).
//!
//! Code objects are not on the collector's lists: pmt finds them only by following functions
//! into `__code__` and code into the code nested in its constants. Their count and bytes are
//! compared, within 1%, with the target's own count of the code its tracked functions hold.
//! The `type` objects the collector lists are classes; the others pmt finds are built-in
//! (static) types, all of one size: pmt's bytes of `type` are compared, within 1%, with the
//! classes' `sys.getsizeof` plus that size for each of its untracked ones.
//!
//! The small built-in objects pmt follows by fixed members (property, classmethod,
//! staticmethod, built-in functions and methods, method-wrappers, descriptors, weak
//! references) must not be among the types it says it does not follow, and two lists held
//! only through them (a property getter's closure, a weak reference callback's closure) must
//! be named as holders by those closures. A suspended generator's count and bytes must be
//! exactly the target's, and the list its frame holds named as its local; so must those of
//! subclasses of set, deque and weakref.ref, read as their bases.
//!
//! On every interpreter (`tests/scripts/heap_builtins.py`, no packages): the built-in types
//! pmt reads by their own layouts (OrderedDict and a subclass of it, SimpleNamespace,
//! mappingproxy, 3.9+ GenericAlias, aware datetime and time with their timezones, a subclass
//! of datetime) and a suspended coroutine's and async generator's locals each hold objects
//! nothing else holds; every holder the target names must be named by pmt with exactly its
//! item count and the bytes the target counted (`sys.getsizeof` of it and of what only it
//! holds), and none of those types (nor `datetime.date` and `datetime.timedelta`, which hold
//! no references) may be among the types pmt says it does not follow. The same script keeps
//! exceptions (a `ValueError` and a class deriving from `Exception`) whose tracebacks' frames
//! outlived their calls, built-in exceptions holding lists in their own members
//! (`OSError.filename`, `StopIteration.value`, 3.11+ `ExceptionGroup.exceptions`), a frame kept by `sys._getframe()` and (3.10+) an `int | GenericAlias`
//! union, a list of `zoneinfo.ZoneInfo` objects read from TZif data the script makes and an
//! instance of a class deriving from `ZoneInfo` (3.9+), and a `collections.defaultdict` (a C
//! type deriving from `dict`, read as one) whose factory's closure holds a list, an
//! `os.stat_result` (a struct sequence: a built-in subclass of `tuple` until 3.7) holding lists
//! in a visible field and in one past its length, and instances of a class deriving from
//! `str`, each holding
//! a list pmt must name the Python way
//! (`__main__.KEPT[0].__traceback__.tb_next.tb_frame local rows`); and it counts its frames,
//! tracebacks, exceptions, unions, zones and defaultdicts with `gc.get_objects()` (plus what the collector
//! does not track: its running module frame's object on 3.11+, zones on 3.9–3.11) and
//! `sys.getsizeof`: pmt's count and bytes of each must be exactly those.

mod common;

use std::collections::HashMap;
use std::time::Duration;

/// How many of the target's most numerous tracked types are compared.
const COMPARED_TYPES: usize = 20;

/// What the target counted itself: `gc.get_objects()` by type name, and the sum of
/// `sys.getsizeof` of them.
struct OwnCounts {
    counts: HashMap<String, u64>,
    sizes: HashMap<String, u64>,
    /// The code objects its functions hold: `(count, sum of sys.getsizeof)`.
    code: (u64, u64),
    /// `sys.getsizeof` of a built-in (static) type.
    static_type_size: u64,
}

fn own_counts(target: &mut common::Target) -> OwnCounts {
    let json = target.wait_for_json("COUNTS ", Duration::from_secs(120));
    let table = |key: &str| -> HashMap<String, u64> {
        json[key]
            .as_object()
            .expect("a table of counts")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or_default()))
            .collect()
    };
    OwnCounts {
        counts: table("counts"),
        sizes: table("sizes"),
        code: (
            json["code"]["count"]
                .as_u64()
                .expect("a count of code objects"),
            json["code"]["bytes"].as_u64().expect("their bytes"),
        ),
        static_type_size: json["static_type_size"]
            .as_u64()
            .expect("the size of a static type"),
    }
}

/// The types whose references pmt follows at fixed members.
const FIXED_MEMBER_TYPES: &[&str] = &[
    "property",
    "classmethod",
    "staticmethod",
    "builtin_function_or_method",
    "builtin_method",
    "method-wrapper",
    "member_descriptor",
    "getset_descriptor",
    "method_descriptor",
    "wrapper_descriptor",
    "classmethod_descriptor",
    "weakref.ReferenceType",
    "weakref.ProxyType",
    "weakref.CallableProxyType",
];

/// The lists the script holds only through a property and a weak reference's callback, and
/// the one a suspended generator's frame holds, with their lengths.
const HELD_THROUGH_FIXED_MEMBERS: &[(&str, u64)] = &[
    ("<closure of __main__.make_getter.get>.rows", 30_000),
    ("<closure of __main__.make_callback.forget>.pending", 30_000),
    ("__main__.BATCHES local pending", 3_000),
    ("__main__.TAGS", 2_000),
    ("__main__.RING", 1_500),
];

/// Types too few to be among the top 20 whose count and bytes must be exactly the target's:
/// a 3.11+ generator is sized from its code, not its type; the subclasses of set, deque and
/// weakref.ref are read as their bases (a deque's blocks counted).
const EXACT_TYPES: &[&str] = &[
    "generator",
    "__main__.Tags",
    "__main__.Ring",
    "weakref.KeyedRef",
];

/// The types of `names` that `snap` says it did not follow, with how many objects.
fn not_followed_among(snap: &serde_json::Value, names: &[&str]) -> Vec<String> {
    let pairs = snap["not_followed"]["objects_by_type"]
        .as_array()
        .expect("the types not followed");
    pairs
        .iter()
        .filter(|pair| names.contains(&pair[0].as_str().unwrap_or_default()))
        .map(|pair| format!("{}: {} objects not followed", pair[0], pair[1]))
        .collect()
}

/// `(count, tracked, bytes)` by type name.
type TypeCounts = HashMap<String, (u64, u64, u64)>;

/// pmt's `(count, tracked, bytes)` by type name (summed over types of the same name), and
/// what else its snapshot must show (a list of mismatches).
fn pmt_types(label: &str, pid: i32) -> (TypeCounts, Vec<String>) {
    let (snap, _) = common::pmt_heap_json(label, &["--pid", &pid.to_string(), "--holders", "30"]);
    let mut mismatches = not_followed_among(&snap, FIXED_MEMBER_TYPES);
    for &(path, items) in HELD_THROUGH_FIXED_MEMBERS {
        match common::holder(&snap["holders"], path) {
            Some(h) if h["items"] == items => {}
            Some(h) => mismatches.push(format!("{path}: {} items, not {items}", h["items"])),
            None => mismatches.push(format!("{path}: not among the holders")),
        }
    }
    let mut types = TypeCounts::new();
    for t in snap["types"].as_array().expect("types") {
        let entry = types
            .entry(t["name"].as_str().unwrap_or_default().to_string())
            .or_default();
        entry.0 += t["count"].as_u64().unwrap_or_default();
        entry.1 += t["tracked"].as_u64().unwrap_or_default();
        entry.2 += t["bytes"].as_u64().unwrap_or_default();
    }
    (types, mismatches)
}

fn within_one_percent(found: u64, wanted: u64) -> bool {
    found.abs_diff(wanted) <= (wanted / 100).max(1)
}

fn check(label: &str) {
    let Some(interp) = common::package_venv_or_skip(label, &["networkx"]) else {
        return;
    };
    let mut target = common::start(&interp, &common::script("heap_networkx.py"), &[]);
    let own = own_counts(&mut target);
    target.wait_for_line("READY", Duration::from_secs(30));
    let (found, mut mismatches) = pmt_types(label, target.pid());
    drop(target);

    let mut top: Vec<(&String, &u64)> = own.counts.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut bytes_compared = 0;
    for (name, &wanted) in top.into_iter().take(COMPARED_TYPES) {
        let (count, tracked, bytes) = found.get(name).copied().unwrap_or_default();
        if !within_one_percent(tracked, wanted) {
            mismatches.push(format!(
                "{name}: pmt {tracked} tracked, gc.get_objects() {wanted}"
            ));
        }
        if count == tracked {
            bytes_compared += 1;
            let sizes = own.sizes.get(name).copied().unwrap_or_default();
            if !within_one_percent(bytes, sizes) {
                mismatches.push(format!(
                    "{name}: pmt {bytes} bytes, sys.getsizeof {sizes} bytes"
                ));
            }
        }
    }
    for name in EXACT_TYPES {
        let (count, tracked, bytes) = found.get(*name).copied().unwrap_or_default();
        let wanted = own.counts.get(*name).copied().unwrap_or_default();
        let sizes = own.sizes.get(*name).copied().unwrap_or_default();
        if wanted == 0 || count != tracked || tracked != wanted || bytes != sizes {
            mismatches.push(format!(
                "{name}: pmt {count} ({tracked} tracked) of {bytes} bytes, gc.get_objects() \
                 {wanted} of {sizes} bytes"
            ));
        }
    }
    let (count, _, bytes) = found.get("code").copied().unwrap_or_default();
    let (wanted_count, wanted_bytes) = own.code;
    if !within_one_percent(count, wanted_count) || !within_one_percent(bytes, wanted_bytes) {
        mismatches.push(format!(
            "code: pmt {count} objects of {bytes} bytes, the functions' own {wanted_count} of \
             {wanted_bytes} bytes"
        ));
    }
    let (count, tracked, bytes) = found.get("type").copied().unwrap_or_default();
    let classes = own.sizes.get("type").copied().unwrap_or_default();
    let builtins = count.saturating_sub(tracked);
    let wanted = classes + builtins * own.static_type_size;
    if !within_one_percent(bytes, wanted) {
        mismatches.push(format!(
            "type: pmt {bytes} bytes, sys.getsizeof {classes} bytes of classes plus {builtins} \
             built-in types of {} bytes",
            own.static_type_size
        ));
    }
    assert!(
        mismatches.is_empty(),
        "{label}: pmt heap differs from the target's own counts:\n{}",
        mismatches.join("\n")
    );
    // Most of the top types have no untracked instances: their bytes were compared.
    assert!(
        bytes_compared >= COMPARED_TYPES / 2,
        "{label}: bytes compared for {bytes_compared} types only"
    );
}

#[test]
fn networkx_types_3_12() {
    check("3.12");
}

#[test]
fn networkx_types_sid_3_14() {
    check("sid3.14");
}

/// The built-in types pmt reads by their own layouts, which `heap_builtins.py` makes (and
/// `datetime` itself, `date` and `timedelta` objects).
const BUILTIN_TYPES: &[&str] = &[
    "frame",
    "traceback",
    "ValueError",
    "OSError",
    "StopIteration",
    "ExceptionGroup",
    "types.UnionType",
    "typing.Union",
    "zoneinfo.ZoneInfo",
    "collections.defaultdict",
    "collections.OrderedDict",
    "types.SimpleNamespace",
    "mappingproxy",
    "types.GenericAlias",
    "datetime.datetime",
    "datetime.time",
    "datetime.timezone",
    "datetime.date",
    "datetime.timedelta",
    "slice",
];

/// `heap_builtins.py` on `label`: none of [`BUILTIN_TYPES`] is left not followed, and each
/// holder it names has its items and retained bytes.
fn check_builtins(label: &str) {
    let Some(interp) = common::interpreter_or_skip(label) else {
        return;
    };
    let mut target = common::start(&interp, &common::script("heap_builtins.py"), &[]);
    let counted = target.wait_for_json("TYPES ", Duration::from_secs(30));
    let expected = target.wait_for_json("EXPECT ", Duration::from_secs(30));
    target.wait_for_line("READY", Duration::from_secs(30));
    let pid = target.pid().to_string();
    let (snap, _) = common::pmt_heap_json(label, &["--pid", &pid, "--holders", "40"]);
    drop(target);
    let expected = expected.as_array().expect("a list of holders");
    let mut mismatches = not_followed_among(&snap, BUILTIN_TYPES);
    let counted = counted.as_object().expect("counts by type");
    for (name, wanted) in counted {
        let found = snap["types"]
            .as_array()
            .expect("types")
            .iter()
            .filter(|t| t["name"] == name.as_str())
            .fold((0, 0), |(count, bytes), t| {
                (
                    count + t["count"].as_u64().unwrap_or_default(),
                    bytes + t["bytes"].as_u64().unwrap_or_default(),
                )
            });
        if serde_json::json!([found.0, found.1]) != *wanted {
            mismatches.push(format!(
                "{name}: pmt {} objects of {} bytes, the target {wanted}",
                found.0, found.1
            ));
        }
    }
    for want in expected {
        let path = want["path"].as_str().unwrap_or_default();
        let wanted = (&want["items"], &want["bytes"]);
        match common::holder(&snap["holders"], path) {
            Some(h) if (&h["items"], &h["retained_bytes"]) == wanted => {}
            Some(h) => mismatches.push(format!(
                "{path}: {} items of {} bytes retained, not {} of {}",
                h["items"], h["retained_bytes"], wanted.0, wanted.1
            )),
            None => mismatches.push(format!("{path}: not among the holders")),
        }
    }
    assert!(
        mismatches.is_empty(),
        "{label}: of {} holders:\n{}",
        expected.len(),
        mismatches.join("\n")
    );
}

#[test]
fn builtins_3_6() {
    check_builtins("3.6");
}

#[test]
fn builtins_3_7() {
    check_builtins("3.7");
}

#[test]
fn builtins_3_8() {
    check_builtins("3.8");
}

#[test]
fn builtins_3_9() {
    check_builtins("3.9");
}

#[test]
fn builtins_3_10() {
    check_builtins("3.10");
}

#[test]
fn builtins_3_11() {
    check_builtins("3.11");
}

#[test]
fn builtins_3_12() {
    check_builtins("3.12");
}

#[test]
fn builtins_3_13() {
    check_builtins("3.13");
}

#[test]
fn builtins_system_3_11() {
    check_builtins("system3.11");
}

#[test]
fn builtins_sid_3_13() {
    check_builtins("sid3.13");
}

#[test]
fn builtins_sid_3_14() {
    check_builtins("sid3.14");
}

#[test]
fn builtins_sid_3_15() {
    check_builtins("sid3.15");
}

/// numpy arrays (`tests/scripts/heap_numpy.py`, numpy from the packages venv): each holder
/// retains what the program itself says it holds, within 1%: the buffers its arrays own (a
/// dict of eight 1 MiB arrays, a Fortran-order matrix), the buffer a view's base owns, and the
/// strings an object array refers to; and its item count (a dict's keys, an array's elements).
fn check_numpy(label: &str) {
    let Some(interp) = common::package_venv_or_skip(label, &["numpy"]) else {
        return;
    };
    let mut target = common::start(&interp, &common::script("heap_numpy.py"), &[]);
    let sizes = target.wait_for_json("SIZES ", Duration::from_secs(60));
    target.wait_for_line("READY", Duration::from_secs(30));
    let (snap, _) = common::pmt_heap_json(label, &["--pid", &target.pid().to_string()]);
    drop(target);
    let mut mismatches = Vec::new();
    for name in ["FEATURES", "VIEW", "NAMES", "MATRIX"] {
        let path = format!("__main__.{name}");
        let wanted = sizes[name].as_u64().expect("a size");
        let items = &sizes["items"][name];
        match common::holder(&snap["holders"], &path) {
            Some(h) => {
                let retained = h["retained_bytes"].as_u64().unwrap_or_default();
                if !within_one_percent(retained, wanted) || h["items"] != *items {
                    mismatches.push(format!(
                        "{path}: retains {retained} bytes and {} items, the program says \
                         {wanted} and {items}",
                        h["items"]
                    ));
                }
            }
            None => mismatches.push(format!("{path}: not among the holders")),
        }
    }
    assert!(
        mismatches.is_empty(),
        "{label}: pmt heap differs from the program's own sizes:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn numpy_buffers_3_12() {
    check_numpy("3.12");
}

#[test]
fn numpy_buffers_sid_3_14() {
    check_numpy("sid3.14");
}
