//! Property tests (issue #15): arbitrary input never panics the wire-protocol validation or the `/metrics`
//! parser, and the parser accounts for every line.

use gpu_agent::protocol::{Batch, GpuSample, NodeInfo, PROTOCOL_VERSION, ServingSample};
use proptest::prelude::*;

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        "[a-z0-9/.-]{0,20}",
        proptest::collection::vec(any::<char>(), 0..300).prop_map(String::from_iter)
    ]
}

fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![any::<f64>(), -1e3..1e3f64, Just(f64::NAN), Just(f64::INFINITY)]
}

prop_compose! {
    fn gpu()(ts_ms in any::<i64>(), gpu_index in any::<u32>(), uuid in any_text(), model in any_text(),
             util_pct in proptest::option::of(any_f64()), used in proptest::option::of(any::<u64>()),
             total in proptest::option::of(any::<u64>()), power_w in proptest::option::of(any_f64()),
             temp_c in proptest::option::of(any_f64()), sm_active in proptest::option::of(any_f64())) -> GpuSample {
        GpuSample { ts_ms, gpu_index, uuid, model, util_pct, mem_used_bytes: used, mem_total_bytes: total, power_w,
            temp_c, sm_clock_mhz: None, mem_clock_mhz: None, throttle_reasons: None, ecc_dbe_total: None,
            xid_last: None, sm_active, tensor_active: None }
    }
}

prop_compose! {
    fn serving()(ts_ms in any::<i64>(), deployment in any_text(), replica in any_text(), engine in any_text(),
                 queue_depth in any_f64(), running in any_f64(), kv in proptest::option::of(any_f64()),
                 ttft in proptest::option::of(any_f64())) -> ServingSample {
        ServingSample { ts_ms, deployment, replica, engine, queue_depth, running, kv_cache_pct: kv, ttft_p50_s: ttft,
            ttft_p95_s: None, ttft_p99_s: None, itl_p50_s: None, itl_p95_s: None, itl_p99_s: None,
            requests_per_s: 0.0, prompt_tokens_per_s: 0.0, generation_tokens_per_s: 0.0, batch_size_mean: None }
    }
}

prop_compose! {
    fn batch()(agent_id in any_text(), hostname in any_text(), agent_version in any_text(), gpu_source in any_text(),
               group in proptest::option::of(any_text()), deployment in proptest::option::of(any_text()),
               gpus in proptest::collection::vec(gpu(), 0..4), serving in proptest::collection::vec(serving(), 0..4))
               -> Batch {
        Batch { version: PROTOCOL_VERSION, agent_id, seq: 1, sent_at_ms: 0,
            node: NodeInfo { hostname, agent_version, gpu_source, group, deployment },
            gpus, serving, command_results: vec![], probes: vec![] }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Whatever a client sends, validation answers (never panics), and what it accepts is storable: no
    /// control character in any text, GPU indexes in range, finite numbers in range.
    #[test]
    fn validation_never_panics_and_what_it_accepts_is_clean(b in batch(), lo in any::<i64>(), hi in any::<i64>()) {
        let ok = b.validate().is_ok();
        let _ = b.validate_window(lo, hi);
        if ok {
            for g in &b.gpus {
                prop_assert!(gpu_agent::protocol::valid_gpu_index(g.gpu_index));
                prop_assert!(!g.model.chars().any(char::is_control) && !g.uuid.chars().any(char::is_control));
                // Absent is fine; a present reading is finite and in range.
                prop_assert!(g.util_pct.is_none_or(|u| u.is_finite() && (0.0..=100.0).contains(&u)));
                prop_assert!(g.power_w.is_none_or(f64::is_finite) && g.temp_c.is_none_or(f64::is_finite));
            }
            for s in &b.serving {
                prop_assert!(gpu_agent::protocol::parse_deployment(&s.deployment).is_ok());
                prop_assert!(!s.replica.chars().any(char::is_control) && !s.engine.chars().any(char::is_control));
            }
            prop_assert!(!b.node.agent_version.contains('\0') && !b.node.gpu_source.contains('\0'));
        }
    }

    /// Arbitrary JSON-ish bytes never panic the decoder plus validation.
    #[test]
    fn decoding_arbitrary_bytes_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(b) = serde_json::from_slice::<Batch>(&raw) {
            let _ = b.validate();
        }
    }
}

fn metrics_line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "# [A-Z]{4} [a-z_:]{1,10} .{0,10}",
        "[a-z_:][a-z0-9_:]{0,12}(\\{[a-z_]{1,5}=\"[^\"\\n]{0,6}\"(,[a-z_]{1,5}=\"[^\"\\n]{0,6}\"){0,2}\\})? -?[0-9]{1,4}(\\.[0-9]{1,3})?( [0-9]{1,13})?",
        "[^\\n]{0,60}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any text: no panic, and every sample line (neither blank nor a comment) yields a sample or an error.
    #[test]
    fn the_metrics_parser_accounts_for_every_line(lines in proptest::collection::vec(metrics_line(), 0..30)) {
        let text = lines.join("\n");
        let s = gpu_agent::scrape::parse(&text);
        prop_assert_eq!(s.samples.len() + s.errors.len(), s.sample_lines);
        prop_assert_eq!(s.lines_total, text.lines().count());
        let expected_sample_lines = text.lines().filter(|l| { let t = l.trim(); !t.is_empty() && !t.starts_with('#') }).count();
        prop_assert_eq!(s.sample_lines, expected_sample_lines);
    }

    /// Raw bytes (lossily decoded) never panic the parser.
    #[test]
    fn the_metrics_parser_never_panics_on_bytes(raw in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let text = String::from_utf8_lossy(&raw);
        let s = gpu_agent::scrape::parse(&text);
        prop_assert_eq!(s.samples.len() + s.errors.len(), s.sample_lines);
    }
}
