//! The generated per-version [`Layout`] tables and the lookup by interpreter version.
//!
//! The tables live in `python_offsets/generated/v3_N.rs`, written by `python_offsets/generate`
//! (bindgen over each CPython's own headers); this module only includes them. It owns no
//! offsets of its own and must not be edited to "fix" a number: regenerate instead.

use super::layout::Layout;

macro_rules! generated {
    ($($module:ident => $file:literal),* $(,)?) => {
        $(
            mod $module {
                use super::Layout;
                include!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/python_offsets/generated/",
                    $file
                ));
            }
        )*
    };
}

generated! {
    v3_6 => "v3_6.rs",
    v3_7 => "v3_7.rs",
    v3_8 => "v3_8.rs",
    v3_9 => "v3_9.rs",
    v3_10 => "v3_10.rs",
    v3_11 => "v3_11.rs",
    v3_12 => "v3_12.rs",
    v3_13 => "v3_13.rs",
    v3_14 => "v3_14.rs",
    v3_15 => "v3_15.rs",
}

/// The `(major, minor)` CPython versions that have a generated layout, oldest first.
pub const SUPPORTED: &[(u8, u8)] = &[
    (3, 6),
    (3, 7),
    (3, 8),
    (3, 9),
    (3, 10),
    (3, 11),
    (3, 12),
    (3, 13),
    (3, 14),
    (3, 15),
];

/// The generated layout of CPython `major.minor`, or `None` for a version without a table.
pub fn layout_for(major: u8, minor: u8) -> Option<&'static Layout> {
    match (major, minor) {
        (3, 6) => Some(&v3_6::LAYOUT),
        (3, 7) => Some(&v3_7::LAYOUT),
        (3, 8) => Some(&v3_8::LAYOUT),
        (3, 9) => Some(&v3_9::LAYOUT),
        (3, 10) => Some(&v3_10::LAYOUT),
        (3, 11) => Some(&v3_11::LAYOUT),
        (3, 12) => Some(&v3_12::LAYOUT),
        (3, 13) => Some(&v3_13::LAYOUT),
        (3, 14) => Some(&v3_14::LAYOUT),
        (3, 15) => Some(&v3_15::LAYOUT),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> impl Iterator<Item = &'static Layout> {
        SUPPORTED.iter().map(|&(major, minor)| {
            layout_for(major, minor).unwrap_or_else(|| panic!("no layout for {major}.{minor}"))
        })
    }

    #[test]
    fn every_supported_version_has_its_own_table() {
        for &(major, minor) in SUPPORTED {
            let layout = layout_for(major, minor).expect("table");
            assert_eq!(layout.version, (major, minor));
        }
        assert!(layout_for(3, 5).is_none());
        assert!(layout_for(3, 16).is_none());
        assert!(layout_for(2, 7).is_none());
    }

    #[test]
    fn object_headers_are_the_same_everywhere() {
        // PyObject is {ob_refcnt, ob_type}, PyVarObject adds ob_size (non-debug, 64-bit).
        for layout in all() {
            assert_eq!(layout.object_type, 8, "{:?}", layout.version);
            assert_eq!(layout.var_size, 16, "{:?}", layout.version);
            // PyBytesObject: PyObject_VAR_HEAD, ob_shash, then ob_sval.
            assert_eq!(layout.bytes_sval, 32, "{:?}", layout.version);
            // PyDictObject: PyObject_HEAD, ma_used, ma_version_tag, ma_keys, ma_values.
            assert_eq!(
                (layout.dict_used, layout.dict_keys, layout.dict_values),
                (16, 32, 40),
                "{:?}",
                layout.version
            );
            // A module's dict follows its PyObject_HEAD.
            assert_eq!(layout.module_dict, 16, "{:?}", layout.version);
        }
    }

    #[test]
    fn members_exist_exactly_in_the_versions_that_have_them() {
        for layout in all() {
            let minor = layout.version.1;
            assert_eq!(layout.runtime_interpreters_head.is_some(), minor >= 7);
            assert_eq!(
                layout.runtime_tstate_current.is_some(),
                (7..=11).contains(&minor)
            );
            assert_eq!(layout.interp_gil_ptr.is_some(), minor >= 12);
            assert_eq!(
                layout.cframe_current_frame.is_some(),
                (11..=12).contains(&minor)
            );
            assert_eq!(layout.frame_lineno.is_some(), minor <= 10);
            assert_eq!(layout.frame_size.is_some(), minor >= 11);
            assert_eq!(layout.code_qualname.is_some(), minor >= 11);
            assert_eq!(layout.code_code.is_some(), minor <= 10);
            assert_eq!(layout.long_lv_tag.is_some(), minor >= 12);
            assert_eq!(layout.dictkeys_size.is_some(), minor <= 10);
            assert_eq!(layout.dictkeys_log2_size.is_some(), minor >= 11);
            assert_eq!(layout.tstate_native_thread_id.is_some(), minor >= 11);
            assert_eq!(layout.tstate_base_frame.is_some(), minor >= 15);
            assert_eq!(layout.frame_is_entry.is_some(), minor == 11);
            assert_eq!(layout.code_cellvars.is_some(), minor <= 10);
            assert_eq!(layout.code_cell2arg.is_some(), minor <= 10);
            assert_eq!(layout.code_exceptiontable.is_some(), minor >= 11);
            assert_eq!(layout.code_cached_code.is_some(), minor == 11);
            assert_eq!(layout.code_cached.is_some(), minor >= 12);
            assert_eq!(layout.code_opcache.is_some(), (8..=10).contains(&minor));
            assert_eq!(layout.property_name.is_some(), minor >= 10);
            assert_eq!(layout.cmethod_class.is_some(), minor >= 9);
            assert_eq!(layout.gen_frame.is_some(), minor <= 10);
            assert_eq!(layout.gen_code.is_some(), minor <= 11);
            assert_eq!(layout.gen_iframe.is_some(), minor >= 11);
            assert_eq!(layout.gen_frame_state.is_some(), minor >= 11);
            assert_eq!(layout.coro_origin.is_some(), (7..=10).contains(&minor));
            assert_eq!(layout.frame_func.is_some(), minor >= 11);
            assert_eq!(layout.frameobject_data.is_some(), minor >= 11);
            assert_eq!(layout.union_args.is_some(), minor >= 10);
            assert_eq!(layout.generic_alias_origin.is_some(), minor >= 9);
        }
    }

    #[test]
    fn interpreter_frame_of_3_11_has_the_documented_member_order() {
        // Include/internal/pycore_frame.h (3.11): f_func, f_globals, f_builtins, f_locals,
        // f_code, frame_obj, previous, prev_instr, int stacktop, bool is_entry, char owner,
        // then localsplus[].
        let l = layout_for(3, 11).expect("3.11");
        assert_eq!(l.frame_code, 4 * 8);
        assert_eq!(l.frame_back, 6 * 8);
        assert_eq!(l.frame_lasti, 7 * 8);
        assert_eq!(l.frame_owner, Some(8 * 8 + 4 + 1));
        assert_eq!(l.frame_size, Some(80));
    }

    #[test]
    fn frames_of_3_12_on_start_with_the_code_then_the_previous_frame() {
        for minor in [12, 13, 14, 15] {
            let l = layout_for(3, minor).expect("table");
            assert_eq!((l.frame_code, l.frame_back), (0, 8), "3.{minor}");
        }
    }

    #[test]
    fn ints_keep_their_digits_after_the_size_or_tag() {
        for layout in all() {
            assert_eq!(layout.long_digit, 24, "{:?}", layout.version);
        }
        assert_eq!(layout_for(3, 12).and_then(|l| l.long_lv_tag), Some(16));
    }
}
