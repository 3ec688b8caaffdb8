//! The entity registry as its users see it: the example schema set, data
//! validation, reference discovery, and a broken set reporting every problem.

// One module, so that `cargo test -p hubsync-core schema` selects these too.
mod schema {
    use std::path::PathBuf;

    use hubsync_core::schema::{
        EntityRegistry, PathSegment, SchemaProblem, SchemaSetError, SchemaVersion, ValidateError,
    };
    use serde_json::{Value, json};
    use uuid::Uuid;

    fn example_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas")
    }

    fn example() -> EntityRegistry {
        match EntityRegistry::load_dir(&example_dir()) {
            Ok(registry) => registry,
            Err(e) => panic!("the example schema set must load:\n{e}"),
        }
    }

    /// Looks like a uuid, is not one ('z' is not hex).
    const NOT_A_UUID: &str = "00000000-0000-4000-8000-00000000000z";

    fn uuid(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn valid_report() -> Value {
        json!({
            "date": "2025-03-14",
            "brigade": uuid(1).to_string(),
            "site": uuid(2).to_string(),
            "status": "submitted",
            "notes": "poured the slab",
            "lines": [
                {"employee": uuid(10).to_string(), "hours": 8, "task": "formwork"},
                {"employee": uuid(11).to_string(), "hours": 7.5, "task": "concrete"}
            ]
        })
    }

    /// Validates `data` as `type_name` in the example set and compares the
    /// issues (path, message) with `expected`; empty `expected` = valid.
    fn check(type_name: &str, data: Value, expected: &[(&str, &str)]) {
        let result = example().validate(type_name, &data);
        let got: Vec<(String, String)> = match result {
            Ok(()) => Vec::new(),
            Err(ValidateError::Invalid(e)) => {
                assert_eq!(e.entity_type, type_name);
                e.issues.into_iter().map(|i| (i.path, i.message)).collect()
            }
            Err(other) => panic!("expected a validation result, got {other}"),
        };
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(p, m)| (p.to_string(), m.to_string()))
            .collect();
        assert_eq!(got, expected, "data: {data}");
    }

    /// `data` with the value at `pointer` replaced, or added to its parent object.
    fn with(mut data: Value, pointer: &str, value: Value) -> Value {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        match data.pointer_mut(parent).unwrap() {
            Value::Object(object) => {
                object.insert(key.to_owned(), value);
            }
            Value::Array(items) => items[key.parse::<usize>().unwrap()] = value,
            other => panic!("cannot set {pointer} in {other}"),
        }
        data
    }

    fn without(mut data: Value, field: &str) -> Value {
        data.as_object_mut().unwrap().remove(field);
        data
    }

    // ---------------------------------------------------------------- example set

    #[test]
    fn example_set_loads_with_four_types_and_version_1_0_0() {
        let registry = example();
        assert_eq!(registry.version(), SchemaVersion::new(1, 0, 0));
        assert_eq!(
            registry.type_names(),
            ["Brigade", "DailyReport", "Employee", "Site"]
        );
        assert!(registry.contains("DailyReport"));
        assert!(!registry.contains("common"));
        let report = registry.get("DailyReport").unwrap();
        assert_eq!(report.file, PathBuf::from("DailyReport.schema.json"));
        assert_eq!(report.schema["title"], "DailyReport");
        for name in registry.type_names() {
            assert_eq!(
                registry.get(&name).unwrap().conflict,
                None,
                "{name}: server-wins default"
            );
        }
    }

    #[test]
    fn example_set_declares_its_references() {
        let registry = example();
        let refs = |name: &str| -> Vec<(String, String, bool)> {
            registry
                .get(name)
                .unwrap()
                .references
                .iter()
                .map(|r| (r.pointer.clone(), r.target.clone(), r.is_parent))
                .collect()
        };
        let r = |p: &str, t: &str, parent: bool| (p.to_owned(), t.to_owned(), parent);
        assert_eq!(refs("Brigade"), []);
        assert_eq!(refs("Employee"), [r("/brigade", "Brigade", false)]);
        assert_eq!(refs("Site"), [r("/parent", "Site", true)]);
        assert_eq!(
            refs("DailyReport"),
            [
                r("/brigade", "Brigade", false),
                r("/site", "Site", false),
                r("/lines/*/employee", "Employee", false)
            ]
        );
        let employee_ref = &registry.get("DailyReport").unwrap().references[2];
        assert_eq!(
            employee_ref.path,
            [
                PathSegment::Field("lines".into()),
                PathSegment::AnyIndex,
                PathSegment::Field("employee".into())
            ]
        );
        assert_eq!(
            registry
                .get("Site")
                .unwrap()
                .parent()
                .map(|r| r.pointer.as_str()),
            Some("/parent")
        );
        assert!(registry.get("DailyReport").unwrap().parent().is_none());
    }

    #[test]
    fn reference_values_finds_brigade_site_and_every_line_employee() {
        let registry = example();
        let report = registry.get("DailyReport").unwrap();
        let mut data = valid_report();
        data["lines"]
            .as_array_mut()
            .unwrap()
            .push(json!({"employee": null, "hours": 1, "task": "x"}));
        let found: Vec<(&str, Uuid)> = report
            .reference_values(&data)
            .into_iter()
            .map(|(r, id)| (r.pointer.as_str(), id))
            .collect();
        assert_eq!(
            found,
            [
                ("/brigade", uuid(1)),
                ("/site", uuid(2)),
                ("/lines/*/employee", uuid(10)),
                ("/lines/*/employee", uuid(11))
            ]
        );

        let site = registry.get("Site").unwrap();
        assert_eq!(
            site.reference_values(&json!({"name": "A", "parent": null})),
            []
        );
        let with_parent =
            site.reference_values(&json!({"name": "A", "parent": uuid(7).to_string()}));
        assert_eq!(with_parent.len(), 1);
        assert!(with_parent[0].0.is_parent);
        assert_eq!(with_parent[0].1, uuid(7));
        // Not a uuid: skipped here, reported by validation.
        assert_eq!(site.reference_values(&json!({"parent": NOT_A_UUID})), []);
    }

    // ---------------------------------------------------------------- validation

    #[test]
    fn a_valid_daily_report_passes() {
        check("DailyReport", valid_report(), &[]);
        check(
            "DailyReport",
            json!({"date": "2025-01-01", "brigade": uuid(1).to_string(), "site": uuid(2).to_string()}),
            &[],
        );
    }

    #[test]
    fn bad_date_format_is_reported_at_date() {
        check(
            "DailyReport",
            with(valid_report(), "/date", json!("2025-13-45")),
            &[("/date", r#""2025-13-45" is not a "date""#)],
        );
    }

    #[test]
    fn hours_over_24_is_reported_at_the_line() {
        check(
            "DailyReport",
            with(valid_report(), "/lines/0/hours", json!(30)),
            &[("/lines/0/hours", "30 is greater than the maximum of 24")],
        );
    }

    #[test]
    fn missing_required_and_unknown_property_are_reported_at_the_object() {
        check(
            "DailyReport",
            without(valid_report(), "site"),
            &[("", r#""site" is a required property"#)],
        );
        check(
            "DailyReport",
            with(valid_report(), "/colour", json!("red")),
            &[(
                "",
                "Additional properties are not allowed ('colour' was unexpected)",
            )],
        );
        check(
            "DailyReport",
            with(
                valid_report(),
                "/lines/1",
                json!({"employee": uuid(3).to_string(), "hours": 1}),
            ),
            &[("/lines/1", r#""task" is a required property"#)],
        );
    }

    /// Issues come in the validator's order (by schema keyword), not sorted.
    #[test]
    fn every_issue_is_reported_not_only_the_first() {
        let data = with(
            with(
                without(valid_report(), "date"),
                "/brigade",
                json!("not-a-uuid"),
            ),
            "/lines/0/hours",
            json!(-1),
        );
        check(
            "DailyReport",
            data,
            &[
                ("", r#""date" is a required property"#),
                ("/lines/0/hours", "-1 is less than the minimum of 0"),
                ("/brigade", r#""not-a-uuid" is not a "uuid""#),
            ],
        );
    }

    #[test]
    fn shared_definitions_apply_through_cross_file_ref() {
        check(
            "Brigade",
            json!({"name": ""}),
            &[("/name", r#""" is shorter than 1 character"#)],
        );
        check(
            "Employee",
            json!({"full_name": "Ann", "brigade": null}),
            &[],
        );
        check(
            "Employee",
            json!({"full_name": "Ann", "brigade": NOT_A_UUID}),
            &[("/brigade", &format!(r#""{NOT_A_UUID}" is not a "uuid""#))],
        );
    }

    #[test]
    fn validation_error_message_names_the_type_and_each_path() {
        let err = example()
            .validate(
                "DailyReport",
                &with(valid_report(), "/lines/0/hours", json!(30)),
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "DailyReport data failed validation: /lines/0/hours: 30 is greater than the maximum of 24"
        );
    }

    #[test]
    fn an_unknown_type_is_its_own_error_listing_the_known_types() {
        let err = example().validate("Brigad", &json!({})).unwrap_err();
        match &err {
            ValidateError::UnknownType { name, known } => {
                assert_eq!(name, "Brigad");
                assert_eq!(known, &["Brigade", "DailyReport", "Employee", "Site"]);
            }
            other => panic!("expected UnknownType, got {other:?}"),
        }
        assert!(
            err.to_string()
                .contains("defines Brigade, DailyReport, Employee, Site"),
            "{err}"
        );
    }

    #[test]
    fn registry_clones_share_the_loaded_set() {
        let a = example();
        let b = a.clone();
        assert!(std::ptr::eq(a.get("Site").unwrap(), b.get("Site").unwrap()));
    }

    // ---------------------------------------------------------------- loading problems

    fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, c)| (n.to_string(), c.to_string()))
            .collect()
    }

    const SET: (&str, &str) = ("schema-set.json", r#"{"version": "1.0.0"}"#);
    const BRIGADE_OK: (&str, &str) = (
        "Brigade.schema.json",
        r#"{"title": "Brigade", "type": "object", "properties": {"name": {"type": "string"}}}"#,
    );

    fn load_err(list: &[(&str, &str)]) -> SchemaSetError {
        match EntityRegistry::from_files(files(list)) {
            Ok(r) => panic!("expected problems, loaded {:?}", r.type_names()),
            Err(e) => e,
        }
    }

    /// Loads `list` and checks that exactly the `expected` problems (file,
    /// pointer, a fragment of the message) are reported, in any order.
    fn check_problems(list: &[(&str, &str)], expected: &[(&str, &str, &str)]) {
        let err = load_err(list);
        let matches = |p: &SchemaProblem, (file, pointer, fragment): &(&str, &str, &str)| {
            p.file == *file && p.pointer == *pointer && p.message.contains(fragment)
        };
        for want in expected {
            assert!(
                err.problems.iter().any(|p| matches(p, want)),
                "missing problem {want:?} in:\n{err}"
            );
        }
        assert_eq!(
            err.problems.len(),
            expected.len(),
            "unexpected extra problems in:\n{err}"
        );
    }

    fn loads(list: &[(&str, &str)]) -> EntityRegistry {
        match EntityRegistry::from_files(files(list)) {
            Ok(r) => r,
            Err(e) => panic!("expected the set to load:\n{e}"),
        }
    }

    #[test]
    fn a_broken_set_reports_all_its_problems_at_once() {
        let err = load_err(&[
            (
                "Brigade.schema.json",
                "{\"title\": \"Brigade\",\n  \"type\": \"object\",,}",
            ),
            (
                "Employee.schema.json",
                r#"{"title": "Employee", "type": "object", "properties": {
                "brigade": {"type": "string", "format": "uuid", "x-hubsync-ref": "Brigad"}}}"#,
            ),
            (
                "Site.schema.json",
                r#"{"title": "Place", "type": "object"}"#,
            ),
        ]);
        let summary: Vec<(&str, &str)> = err
            .problems
            .iter()
            .map(|p| (p.file.as_str(), p.pointer.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("Brigade.schema.json", ""),
                ("Employee.schema.json", "/properties/brigade/x-hubsync-ref"),
                ("Site.schema.json", "/title"),
                ("schema-set.json", ""),
            ],
            "{err}"
        );
        let text = err.to_string();
        for expected in [
            "schema set <in-memory> is invalid (4 problems)",
            "Brigade.schema.json: invalid JSON at line 2, column 20",
            "Site.schema.json at /title: title \"Place\" does not match the file name",
            "rename the file or change the title to \"Site\"",
            "schema-set.json: missing",
            "{\"version\": \"1.0.0\"}",
            "x-hubsync-ref names \"Brigad\", which is not an entity type of this set (known: Brigade, Employee, Site)",
        ] {
            assert!(text.contains(expected), "{expected:?} not in:\n{text}");
        }
        assert_eq!(text.lines().count(), 5, "{text}");
    }

    #[test]
    fn cross_file_ref_to_a_shared_file_and_to_another_entity_file_works() {
        let registry = loads(&[
            SET,
            BRIGADE_OK,
            (
                "defs.json",
                r#"{"$defs": {"Code": {"type": "string", "pattern": "^[A-Z]{3}$"}}}"#,
            ),
            (
                "Team.schema.json",
                r#"{"title": "Team", "type": "object", "properties": {
                "code": {"$ref": "defs.json#/$defs/Code"},
                "lead": {"$ref": "Brigade.schema.json"}
            }}"#,
            ),
        ]);
        assert_eq!(registry.type_names(), ["Brigade", "Team"]);
        assert!(
            registry
                .validate("Team", &json!({"code": "ABC", "lead": {"name": "x"}}))
                .is_ok()
        );
        let err = registry
            .validate("Team", &json!({"code": "abc", "lead": {"name": 1}}))
            .unwrap_err();
        let ValidateError::Invalid(err) = err else {
            panic!("{err}")
        };
        let paths: Vec<&str> = err.issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["/code", "/lead/name"]);
    }

    #[test]
    fn a_dangling_ref_is_reported_with_the_file_and_pointer_that_holds_it() {
        check_problems(
            &[
                SET,
                BRIGADE_OK,
                ("defs.json", r#"{"$defs": {"Code": {"type": "string"}}}"#),
                (
                    "Team.schema.json",
                    r##"{"title": "Team", "type": "object", "properties": {
                    "a": {"$ref": "missing.json#/$defs/X"},
                    "b": {"$ref": "defs.json#/$defs/Nope"},
                    "c": {"$ref": "#/$defs/Local"},
                    "d": {"$ref": "https://example.com/s.json"}
                }}"##,
                ),
            ],
            &[
                (
                    "Team.schema.json",
                    "/properties/a/$ref",
                    r#"points to "missing.json", which is not in the schema set (files: Brigade.schema.json, Team.schema.json, defs.json)"#,
                ),
                (
                    "Team.schema.json",
                    "/properties/b/$ref",
                    "points to /$defs/Nope in defs.json, which does not exist",
                ),
                (
                    "Team.schema.json",
                    "/properties/c/$ref",
                    "points to /$defs/Local in Team.schema.json, which does not exist",
                ),
                (
                    "Team.schema.json",
                    "/properties/d/$ref",
                    "leaves the schema set; hubsync resolves only files of the set",
                ),
            ],
        );
    }

    #[test]
    fn a_dangling_ref_in_one_file_does_not_hide_the_others_problems() {
        check_problems(
            &[
                SET,
                (
                    "Brigade.schema.json",
                    r#"{"title": "Brigade", "type": "object", "properties": {"x": {"$ref": "nope.json"}}}"#,
                ),
                (
                    "Site.schema.json",
                    r#"{"title": "Site", "type": "object", "properties": {"p": {"type": "string", "pattern": "("}}}"#,
                ),
            ],
            &[
                (
                    "Brigade.schema.json",
                    "/properties/x/$ref",
                    "\"nope.json\", which is not in the schema set",
                ),
                (
                    "Site.schema.json",
                    "/properties/p/pattern",
                    "schema does not compile",
                ),
            ],
        );
    }

    #[test]
    fn schema_set_json_must_hold_a_strict_version() {
        check_problems(
            &[("schema-set.json", r#"{"version": "1.2"}"#), BRIGADE_OK],
            &[(
                "schema-set.json",
                "/version",
                "invalid schema version \"1.2\"",
            )],
        );
        check_problems(
            &[
                ("schema-set.json", r#"{"version": 1, "name": "x"}"#),
                BRIGADE_OK,
            ],
            &[
                ("schema-set.json", "/version", "must be a string"),
                ("schema-set.json", "/name", "unknown key \"name\""),
            ],
        );
        check_problems(
            &[("schema-set.json", "{}"), BRIGADE_OK],
            &[("schema-set.json", "", "has no \"version\"")],
        );
    }

    #[test]
    fn an_empty_set_is_a_problem() {
        check_problems(
            &[SET, ("common.json", r#"{"$defs": {}}"#)],
            &[("", "", "no entity types")],
        );
    }

    #[test]
    fn title_must_exist_be_an_identifier_and_match_the_file_name() {
        check_problems(
            &[
                SET,
                ("Brigade.schema.json", r#"{"type": "object"}"#),
                (
                    "daily.schema.json",
                    r#"{"title": "daily", "type": "object"}"#,
                ),
                (
                    "Crew.schema.json",
                    r#"{"title": "Brigade", "type": "object"}"#,
                ),
            ],
            &[
                (
                    "Brigade.schema.json",
                    "",
                    "has no \"title\"; the title names the entity type: add \"title\": \"Brigade\"",
                ),
                (
                    "daily.schema.json",
                    "/title",
                    "not a valid entity type name",
                ),
                (
                    "Crew.schema.json",
                    "/title",
                    "must be named Brigade.schema.json",
                ),
            ],
        );
    }

    #[test]
    fn top_level_must_be_an_object_type_and_draft_2020_12() {
        check_problems(
            &[
                SET,
                (
                    "Brigade.schema.json",
                    r#"{"title": "Brigade", "type": "array"}"#,
                ),
                (
                    "Site.schema.json",
                    r#"{"$schema": "http://json-schema.org/draft-07/schema#", "title": "Site", "type": "object"}"#,
                ),
                ("Other.schema.json", r#"["not", "an", "object"]"#),
            ],
            &[
                (
                    "Brigade.schema.json",
                    "/type",
                    "the top level must say \"type\": \"object\" (found \"array\")",
                ),
                (
                    "Site.schema.json",
                    "/$schema",
                    "must be JSON Schema draft 2020-12",
                ),
                ("Other.schema.json", "", "must contain a JSON object"),
            ],
        );
    }

    #[test]
    fn a_schema_that_breaks_the_meta_schema_is_reported_at_the_keyword() {
        check_problems(
            &[
                SET,
                (
                    "Brigade.schema.json",
                    r#"{"title": "Brigade", "type": "object", "properties": {
                    "name": {"type": "string", "minLength": "one"},
                    "size": {"type": "int"}
                }}"#,
                ),
            ],
            &[
                (
                    "Brigade.schema.json",
                    "/properties/name/minLength",
                    "not a valid JSON Schema (draft 2020-12)",
                ),
                (
                    "Brigade.schema.json",
                    "/properties/size/type",
                    r#""int" is not a JSON Schema type; use one of array, boolean"#,
                ),
            ],
        );
    }

    #[test]
    fn reference_properties_must_be_uuid_strings_naming_a_type() {
        check_problems(
            &[
                SET,
                BRIGADE_OK,
                (
                    "Employee.schema.json",
                    r#"{"title": "Employee", "type": "object", "properties": {
                    "brigade": {"type": "integer", "x-hubsync-ref": "Brigade"},
                    "other": {"type": "string", "format": "uuid", "x-hubsync-ref": 5}
                }}"#,
                ),
            ],
            &[
                (
                    "Employee.schema.json",
                    "/properties/brigade",
                    "a reference property must hold one uuid",
                ),
                (
                    "Employee.schema.json",
                    "/properties/other/x-hubsync-ref",
                    "must be the name of an entity type",
                ),
            ],
        );
    }

    #[test]
    fn parent_without_ref_is_the_same_type_and_only_one_parent_is_allowed() {
        let registry = loads(&[
            SET,
            (
                "Folder.schema.json",
                r#"{"title": "Folder", "type": "object", "properties": {
                "up": {"type": ["string", "null"], "format": "uuid", "x-hubsync-parent": true}}}"#,
            ),
        ]);
        let parent = registry.get("Folder").unwrap().parent().unwrap();
        assert_eq!(
            (parent.pointer.as_str(), parent.target.as_str()),
            ("/up", "Folder")
        );

        check_problems(
            &[
                SET,
                BRIGADE_OK,
                (
                    "Site.schema.json",
                    r#"{"title": "Site", "type": "object", "properties": {
                    "parent": {"type": "string", "format": "uuid", "x-hubsync-parent": true},
                    "brigade": {"type": "string", "format": "uuid", "x-hubsync-ref": "Brigade", "x-hubsync-parent": true},
                    "rows": {"type": "array", "items": {"type": "object", "properties": {
                        "up": {"type": "string", "format": "uuid", "x-hubsync-parent": true}}}}
                }}"#,
                ),
            ],
            &[
                (
                    "Site.schema.json",
                    "/properties/brigade/x-hubsync-parent",
                    "a second x-hubsync-parent in type Site (the first is at Site.schema.json /properties/parent)",
                ),
                (
                    "Site.schema.json",
                    "/properties/rows/items/properties/up/x-hubsync-parent",
                    "inside an array",
                ),
            ],
        );
    }

    #[test]
    fn the_x_hubsync_block_holds_only_known_keys() {
        let registry = loads(&[
            SET,
            (
                "Brigade.schema.json",
                r#"{"title": "Brigade", "type": "object", "x-hubsync": {"conflict": "last-writer-wins"}}"#,
            ),
        ]);
        assert_eq!(
            registry.get("Brigade").unwrap().conflict.as_deref(),
            Some("last-writer-wins")
        );

        check_problems(
            &[
                SET,
                (
                    "Brigade.schema.json",
                    r#"{"title": "Brigade", "type": "object", "x-hubsync": {"conflict": 3, "on_delete": "cascade"}}"#,
                ),
                (
                    "Site.schema.json",
                    r#"{"title": "Site", "type": "object", "x-hubsync": "server-wins"}"#,
                ),
            ],
            &[
                (
                    "Brigade.schema.json",
                    "/x-hubsync/conflict",
                    "conflict must name a resolver",
                ),
                (
                    "Brigade.schema.json",
                    "/x-hubsync/on_delete",
                    "unknown key \"on_delete\" in x-hubsync; known keys: conflict",
                ),
                (
                    "Site.schema.json",
                    "/x-hubsync",
                    "x-hubsync must be an object",
                ),
            ],
        );
    }

    #[test]
    fn misspelt_or_misplaced_framework_keywords_are_problems() {
        check_problems(
            &[
                SET,
                BRIGADE_OK,
                (
                    "Employee.schema.json",
                    r#"{"title": "Employee", "type": "object",
                    "properties": {
                        "brigade": {"type": "string", "format": "uuid", "x-hubsync-refs": "Brigade"},
                        "nested": {"type": "object", "x-hubsync": {"conflict": "x"}}
                    },
                    "not": {"properties": {"b": {"type": "string", "format": "uuid", "x-hubsync-ref": "Brigade"}}}
                }"#,
                ),
            ],
            &[
                (
                    "Employee.schema.json",
                    "/properties/brigade/x-hubsync-refs",
                    "unknown framework keyword \"x-hubsync-refs\"",
                ),
                (
                    "Employee.schema.json",
                    "/properties/nested/x-hubsync",
                    "only allowed at the top",
                ),
                (
                    "Employee.schema.json",
                    "/not/properties/b",
                    "hubsync would ignore it",
                ),
            ],
        );
    }

    #[test]
    fn id_is_refused_because_files_are_identified_by_name() {
        check_problems(
            &[
                SET,
                (
                    "Brigade.schema.json",
                    r#"{"$id": "https://example.com/brigade", "title": "Brigade", "type": "object"}"#,
                ),
            ],
            &[("Brigade.schema.json", "/$id", "$id is not supported")],
        );
    }

    #[test]
    fn load_dir_reads_only_json_files_and_names_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("schema-set.json"), SET.1).unwrap();
        std::fs::write(dir.path().join(BRIGADE_OK.0), BRIGADE_OK.1).unwrap();
        std::fs::write(dir.path().join("README.md"), "not json").unwrap();
        std::fs::create_dir(dir.path().join("old.json")).unwrap();
        let registry = EntityRegistry::load_dir(dir.path()).unwrap();
        assert_eq!(registry.type_names(), ["Brigade"]);

        std::fs::write(dir.path().join("Site.schema.json"), "{").unwrap();
        let err = EntityRegistry::load_dir(dir.path()).unwrap_err();
        assert_eq!(err.dir, dir.path().display().to_string());
        assert!(
            err.to_string()
                .contains("Site.schema.json: invalid JSON at line 1, column 1"),
            "{err}"
        );

        let missing = dir.path().join("nope");
        let err = EntityRegistry::load_dir(&missing).unwrap_err();
        assert!(
            err.to_string().contains("cannot list the schema directory"),
            "{err}"
        );
    }
}
