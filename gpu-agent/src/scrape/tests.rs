//! Golden tests on the shared fixtures, malformed/truncated/OpenMetrics input, the engine tracker and DCGM.

use super::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures");
const FIXTURE_FILES: [&str; 4] = ["dcgm.txt", "dcgm_edge.txt", "vllm.txt", "triton.txt"];

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap()
}

/// Non-blank, non-comment lines: the ones that must each yield a sample.
fn sample_lines(text: &str) -> Vec<&str> {
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect()
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<_> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    v.sort();
    v
}

fn sample(name: &str, pairs: &[(&str, &str)], value: f64) -> Sample {
    Sample { name: name.into(), labels: labels(pairs), value, timestamp_ms: None }
}

/// An independent reading of a fixture line, good for lines without escapes and timestamps (which the fixtures
/// are): name up to `{`, labels split on `",`, value after the last blank.
fn naive(line: &str) -> Sample {
    assert!(!line.contains('\\'), "naive oracle cannot read escapes: {line}");
    let (head, value) = line.rsplit_once(' ').unwrap();
    let (name, body) = match head.split_once('{') {
        Some((n, rest)) => (n, rest.strip_suffix('}').unwrap()),
        None => (head, ""),
    };
    let mut labels: Vec<(String, String)> = body
        .split("\",")
        .filter(|kv| !kv.trim().is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once("=\"").unwrap();
            (k.trim().to_string(), v.trim_end_matches('"').to_string())
        })
        .collect();
    labels.sort();
    Sample { name: name.trim().into(), labels, value: value.parse().unwrap(), timestamp_ms: None }
}

/// The accounting invariant every scrape must satisfy.
fn assert_accounted(text: &str, s: &Scrape) {
    assert_eq!(s.sample_lines, sample_lines(text).len(), "{text:?}");
    assert_eq!(s.samples.len() + s.errors.len(), s.sample_lines, "{text:?}");
    assert_eq!(s.lines_total, text.lines().count());
}

// ---------------------------------------------------------------------------------------------------------------
// Golden: every fixture, line by line.

#[test]
fn fixtures_line_by_line() {
    for file in FIXTURE_FILES {
        let text = fixture(file);
        let s = parse(&text);
        assert!(s.errors.is_empty(), "{file}: {:?}", s.errors);
        assert!(!s.openmetrics);
        let lines = sample_lines(&text);
        assert_eq!(s.samples.len(), lines.len(), "{file}");
        assert_accounted(&text, &s);
        for (line, got) in lines.iter().zip(&s.samples) {
            assert_eq!(*got, naive(line), "{file}: {line}");
        }
    }
}

#[test]
fn fixture_sample_counts() {
    let counts: Vec<usize> = FIXTURE_FILES.iter().map(|f| parse(&fixture(f)).samples.len()).collect();
    assert_eq!(counts, [52, 6, 155, 52]);
}

#[test]
fn vllm_fixture_exact_lines() {
    let s = parse(&fixture("vllm.txt"));
    let model = ("model_name", "meta-llama/Llama-3.1-8B-Instruct");
    assert_eq!(s.samples[0], sample("vllm:num_requests_running", &[("engine", "0"), model], 8.0));
    let created = s.named("vllm:prompt_tokens_created").next().unwrap();
    assert_eq!(created.value, 1.75e9);
    let inf = s.named("vllm:time_to_first_token_seconds_bucket").last().unwrap();
    assert_eq!(inf.label("le"), Some("+Inf"));
    assert_eq!(inf.value, 140.0);
    let sum = s.named("vllm:time_to_first_token_seconds_sum").next().unwrap();
    assert_eq!(sum.value, 5.2449999999999966);
    let info = s.named("vllm:cache_config_info").next().unwrap();
    assert_eq!(info.label("gpu_memory_utilization"), Some("0.9"));
    assert_eq!(info.label("num_gpu_blocks"), Some("27264"));
    assert_eq!(info.labels.len(), 6);
}

#[test]
fn dcgm_edge_fixture_exact_lines() {
    let s = parse(&fixture("dcgm_edge.txt"));
    let uuid = "GPU-604ac76c-d9cf-fef3-62e9-d92044ab6e52";
    // Spaces after commas are not part of the label name.
    assert_eq!(s.samples[0], sample("DCGM_FI_DEV_SM_CLOCK", &[("gpu", "0"), ("UUID", uuid)], 139.0));
    assert_eq!(s.samples[2].value, 9_223_372_036_854_775_794.0);
    assert_eq!(s.samples[3].label("GPU_I_PROFILE"), Some("3g.40gb"));
    assert_eq!(s.samples[3].label("pci_bus_id"), Some("00000000:17:00.0"));
    assert_eq!(s.samples[5].label("hostname"), Some("gpu-node-07"));
}

#[test]
fn triton_fixture_exact_lines() {
    let s = parse(&fixture("triton.txt"));
    assert_eq!(s.samples[0].label("gpu_uuid"), Some("GPU-5b3c1a2e-8f0d-4d7e-9a61-3c2b7f4e9d10"));
    assert_eq!(s.samples[0].value, 18342.0);
    let pool = s.named("nv_pinned_memory_pool_total_bytes").next().unwrap();
    assert_eq!(*pool, sample("nv_pinned_memory_pool_total_bytes", &[], 268_435_456.0));
    let sum = s.named("nv_inference_first_response_histogram_ms_sum").next().unwrap();
    assert_eq!(sum.value, 84517.734);
    assert_eq!(s.named("nv_inference_first_response_histogram_ms_bucket").count(), 5);
}

// ---------------------------------------------------------------------------------------------------------------
// prometheus-parse as an oracle, and its known defects.

/// What prometheus-parse makes of one line on its own, `:` in the name rewritten to a placeholder and back.
#[cfg(feature = "agent")]
fn prometheus_parse_line(line: &str) -> Option<Sample> {
    const COLON: &str = "__COLON__";
    let (name, rest) = line.split_at(line.find(['{', ' ']).unwrap_or(line.len()));
    let rewritten = format!("{}{rest}", name.replace(':', COLON));
    let scrape = prometheus_parse::Scrape::parse(std::iter::once(Ok(rewritten))).unwrap();
    let s = scrape.samples.into_iter().next()?;
    let value = match s.value {
        prometheus_parse::Value::Untyped(v) => v,
        other => panic!("a lone line is untyped: {other:?}"),
    };
    let mut labels: Vec<(String, String)> = s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    labels.sort();
    Some(Sample { name: s.metric.replace(COLON, ":"), labels, value, timestamp_ms: None })
}

#[cfg(feature = "agent")]
#[test]
fn prometheus_parse_agrees_on_fixture_lines_once_normalised() {
    for file in FIXTURE_FILES {
        let text = fixture(file);
        for (line, ours) in sample_lines(&text).into_iter().zip(parse(&text).samples) {
            let mut theirs = prometheus_parse_line(line).unwrap();
            // It keeps the blank after a comma in the label name (dcgm-exporter's README sample).
            for (k, _) in &mut theirs.labels {
                *k = k.trim().to_string();
            }
            theirs.labels.sort();
            assert_eq!(theirs, ours, "{line}");
        }
    }
}

#[cfg(feature = "agent")]
#[test]
fn prometheus_parse_known_defects() {
    // Names with a colon are silently dropped: not one vllm:* sample survives.
    let text = fixture("vllm.txt");
    let pp = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    assert_eq!(pp.samples.len(), 0);
    assert_eq!(parse(&text).samples.len(), 155);

    // Label values are split on commas and not unescaped.
    let line = r#"m{a="x,y",b="q\"uote",c="back\\slash",d="new\nline"} 1"#;
    let ours = &parse(line).samples[0];
    assert_eq!(ours.label("a"), Some("x,y"));
    assert_eq!(ours.label("b"), Some("q\"uote"));
    assert_eq!(ours.label("c"), Some("back\\slash"));
    assert_eq!(ours.label("d"), Some("new\nline"));
    let theirs = prometheus_parse_line(line).unwrap().labels;
    assert_ne!(theirs, ours.labels);
    // `a="x,y"` becomes `a="x` plus a piece without `=` that is dropped; escapes stay verbatim.
    assert_eq!(theirs, labels(&[("a", "x"), ("b", r#"q\"uote"#), ("c", r"back\\slash"), ("d", r"new\nline")]));

    // Blanks after commas stay in the label name.
    let theirs = prometheus_parse_line(r#"m{gpu="0", UUID="GPU-1"} 1"#).unwrap().labels;
    assert!(theirs.iter().any(|(k, _)| k == " UUID"), "{theirs:?}");

    // Unparseable lines vanish.
    assert_eq!(prometheus_parse_line("m{a=\"1\"} not_a_number"), None);
    assert_eq!(parse("m{a=\"1\"} not_a_number").errors.len(), 1);
}

// ---------------------------------------------------------------------------------------------------------------
// Values, timestamps, malformed, truncated and OpenMetrics input.

#[test]
fn special_values_and_timestamps() {
    let text = "a NaN\nb +Inf\nc -Inf\nd 1.5e-3\ne -2E+2\nf 7 1712345678901\ng 0 -5\nh Inf\ni 1e400\nj .5 0\n";
    let s = parse(text);
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    let v: Vec<f64> = s.samples.iter().map(|x| x.value).collect();
    assert!(v[0].is_nan());
    assert_eq!(
        &v[1..],
        &[f64::INFINITY, f64::NEG_INFINITY, 0.0015, -200.0, 7.0, 0.0, f64::INFINITY, f64::INFINITY, 0.5]
    );
    let ts: Vec<Option<i64>> = s.samples.iter().map(|x| x.timestamp_ms).collect();
    assert_eq!(ts, [None, None, None, None, None, Some(1_712_345_678_901), Some(-5), None, None, Some(0)]);
}

#[test]
fn blanks_tabs_crlf_and_empty_label_sets() {
    let text = "# HELP x y\r\n\r\n  m{} 1\r\n\tm{ a = \"b\" , } \t2\r\nm{a=\"\"}3\r\nm{a=\"ü, ∞\"} 4\r\n";
    let s = parse(text);
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(
        s.samples,
        [
            sample("m", &[], 1.0),
            sample("m", &[("a", "b")], 2.0),
            sample("m", &[("a", "")], 3.0),
            sample("m", &[("a", "ü, ∞")], 4.0)
        ]
    );
    assert_eq!(s.lines_total, 6);
}

#[test]
fn malformed_lines_are_counted_errors() {
    use ParseError as E;
    type Check = fn(&ParseError) -> bool;
    let cases: &[(&str, Check)] = &[
        ("foo", |e| matches!(e, E::UnexpectedEnd { expected: "value" })),
        ("foo{", |e| matches!(e, E::UnexpectedEnd { expected: "label name" })),
        ("foo{a", |e| matches!(e, E::UnexpectedEnd { expected: "'='" })),
        ("foo{a=", |e| matches!(e, E::UnexpectedEnd { expected: "'\"'" })),
        ("foo{a=\"b", |e| matches!(e, E::UnexpectedEnd { expected: "closing '\"'" })),
        ("foo{a=\"b\\", |e| matches!(e, E::UnexpectedEnd { expected: "closing '\"'" })),
        ("foo{a=\"b\"", |e| matches!(e, E::UnexpectedEnd { expected: "',' or '}'" })),
        ("foo{a=\"b\"}", |e| matches!(e, E::UnexpectedEnd { expected: "value" })),
        ("foo bar", |e| matches!(e, E::InvalidValue(v) if v == "bar")),
        ("foo 1,5", |e| matches!(e, E::InvalidValue(_))),
        ("foo 0x1p-2", |e| matches!(e, E::InvalidValue(_))),
        ("foo 1 2 3", |e| matches!(e, E::TrailingText(t) if t == "3")),
        ("foo 1 abc", |e| matches!(e, E::InvalidTimestamp(_))),
        ("foo 1 1.5", |e| matches!(e, E::InvalidTimestamp(_))),
        ("foo 1 99999999999999999999", |e| matches!(e, E::InvalidTimestamp(_))),
        ("foo-bar 1", |e| matches!(e, E::InvalidName(n) if n == "foo-bar")),
        ("1foo 1", |e| matches!(e, E::InvalidName(_))),
        ("föo 1", |e| matches!(e, E::InvalidName(_))),
        ("{\"quoted.name\"} 1", |e| matches!(e, E::InvalidName(_))),
        ("foo{1a=\"b\"} 1", |e| matches!(e, E::InvalidLabelName { pos: 4 })),
        ("foo{a.b=\"c\"} 1", |e| matches!(e, E::Unexpected { expected: "'='", found: '.', pos: 5 })),
        ("foo{,} 1", |e| matches!(e, E::InvalidLabelName { .. })),
        ("foo{a=\"b\",a=\"c\"} 1", |e| matches!(e, E::DuplicateLabel(l) if l == "a")),
        ("foo{a=\"\\t\"} 1", |e| matches!(e, E::InvalidEscape('t'))),
        ("foo{a=b} 1", |e| matches!(e, E::Unexpected { expected: "'\"'", found: 'b', .. })),
        ("foo{a=\"b\"c=\"d\"} 1", |e| matches!(e, E::Unexpected { expected: "',' or '}'", found: 'c', .. })),
        ("foo{a=\"b\"}} 1", |e| matches!(e, E::InvalidValue(v) if v == "}")),
        (
            "foo 1 # {a=\"b\"}",
            |e| matches!(e, E::InvalidExemplar(inner) if **inner == E::UnexpectedEnd { expected: "exemplar value" }),
        ),
        ("foo 1 # x", |e| matches!(e, E::InvalidExemplar(_))),
        (
            "foo 1 # {a=\"b\"} 1 x",
            |e| matches!(e, E::InvalidExemplar(inner) if matches!(**inner, E::InvalidTimestamp(_))),
        ),
    ];
    for (line, check) in cases {
        let s = parse(line);
        assert_eq!((s.samples.len(), s.errors.len(), s.sample_lines), (0, 1, 1), "{line}");
        let err = &s.errors[0];
        assert!(check(&err.kind), "{line}: {:?}", err.kind);
        assert_eq!((err.line, err.text.as_str()), (1, line.trim()));
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn bad_lines_do_not_hide_good_ones() {
    let text = "# TYPE a gauge\na 1\na{x=\"1\" 2\n\nb 3\nc{\nd 4 # {t=\"1\"} 0.5\n";
    let s = parse(text);
    assert_accounted(text, &s);
    let names: Vec<&str> = s.samples.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "d"]);
    let lines: Vec<usize> = s.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [3, 6]);
}

#[test]
fn long_error_text_is_clipped() {
    let line = format!("m{{a=\"{}", "x".repeat(10_000));
    let s = parse(&line);
    assert_eq!(s.errors[0].text.chars().count(), 121);
}

#[test]
fn truncation_anywhere_never_panics_and_is_accounted() {
    for file in FIXTURE_FILES {
        let text = fixture(file);
        for line in text.lines() {
            for (cut, _) in line.char_indices().chain(std::iter::once((line.len(), ' '))) {
                let prefix = &line[..cut];
                let s = parse(prefix);
                assert_accounted(prefix, &s);
            }
        }
        // Whole documents cut mid-line: all complete lines before the cut still parse.
        for cut in (0..text.len()).step_by(997).filter(|&c| text.is_char_boundary(c)) {
            let prefix = &text[..cut];
            let s = parse(prefix);
            assert_accounted(prefix, &s);
            let complete = prefix.rfind('\n').map_or(0, |i| sample_lines(&prefix[..i]).len());
            assert!(s.samples.len() >= complete, "{file} cut at {cut}");
        }
    }
}

#[test]
fn mutated_fixture_lines_never_panic_and_are_accounted() {
    const CHARS: &[char] =
        &['{', '}', '"', ',', '=', '\\', ' ', '\t', '#', ':', 'n', 'e', '+', '-', '.', '0', '9', 'é', '\u{0}', '\r'];
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    for file in FIXTURE_FILES {
        let text = fixture(file);
        let lines = sample_lines(&text);
        for _ in 0..3000 {
            let mut chars: Vec<char> = lines[next(lines.len())].chars().collect();
            for _ in 0..1 + next(3) {
                let at = next(chars.len());
                match next(3) {
                    0 => chars[at] = CHARS[next(CHARS.len())],
                    1 => chars.insert(at, CHARS[next(CHARS.len())]),
                    _ => {
                        chars.remove(at);
                    }
                }
            }
            let mutated: String = chars.into_iter().collect();
            let s = parse(&mutated);
            assert_accounted(&mutated, &s);
        }
    }
}

#[test]
fn openmetrics_exemplars_created_and_eof() {
    let text = r#"# TYPE foo counter
# HELP foo A counter.
foo_total{a="b"} 17.0 1520879607.789 # {trace_id="KOO5S4vxi0o"} 0.67 1520879606.0
foo_created{a="b"} 1520430000.123
# TYPE h histogram
# UNIT h seconds
h_bucket{le="0.1"} 8 # {trace_id="abc"} 0.054
h_bucket{le="+Inf"} 17 # {} 1
h_count 17 1520879607
h_sum 324789.3
# EOF
"#;
    let s = parse(text);
    assert!(s.openmetrics);
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_accounted(text, &s);
    assert_eq!(s.samples.len(), 6);
    assert_eq!(s.samples[0].value, 17.0);
    assert_eq!(s.samples[0].timestamp_ms, Some(1_520_879_607_789));
    assert_eq!(s.samples[1], sample("foo_created", &[("a", "b")], 1_520_430_000.123));
    assert_eq!(s.samples[3].labels, labels(&[("le", "+Inf")]));
    // OpenMetrics timestamps are seconds even when integral.
    assert_eq!(s.samples[4].timestamp_ms, Some(1_520_879_607_000));

    let after = format!("{text}late 1\n");
    let s = parse(&after);
    assert_accounted(&after, &s);
    assert_eq!(s.errors.len(), 1);
    assert_eq!(s.errors[0].kind, ParseError::AfterEof);
    assert_eq!(s.errors[0].line, 12);
}

// ---------------------------------------------------------------------------------------------------------------
// Engine statistics.

/// `text` with every sample for which `delta` answers increased by that much (the line's name and labels kept as
/// written). Only for lines without timestamps, which the fixtures are.
fn bump(text: &str, delta: impl Fn(&Sample) -> Option<f64>) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let parsed = parse(line);
        match parsed.samples.first().and_then(|s| Some((s, delta(s)?))) {
            Some((s, d)) => {
                let (head, _) = line.rsplit_once(' ').unwrap();
                out.push_str(&format!("{head} {}\n", s.value + d));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

fn le(s: &Sample) -> f64 {
    s.label("le").unwrap().parse().unwrap()
}

fn assert_close(got: f64, want: f64) {
    assert!((got - want).abs() <= 1e-9 * want.abs().max(1.0), "got {got}, want {want}");
}

fn assert_quantiles(got: Option<LatencyQuantiles>, want: [f64; 3]) {
    let q = got.unwrap_or_else(|| panic!("no quantiles, want {want:?}"));
    for (g, w) in [q.p50_s, q.p95_s, q.p99_s].into_iter().zip(want) {
        assert_close(g, w);
    }
}

/// vLLM fixture after 10 s: 35 requests (20 stop, 10 length, 5 abort) with known tokens, latencies, preemptions.
fn vllm_second(text: &str) -> String {
    bump(text, |s| match s.name.as_str() {
        "vllm:prompt_tokens_total" => Some(5000.0),
        "vllm:generation_tokens_total" => Some(2000.0),
        "vllm:num_preemptions_total" => Some(3.0),
        "vllm:request_success_total" => match s.label("finished_reason") {
            Some("stop") => Some(20.0),
            Some("length") => Some(10.0),
            _ => Some(5.0),
        },
        // 100 first tokens: 50 in (0.02, 0.04], 40 in (0.04, 0.06], 10 in (0.1, 0.25].
        "vllm:time_to_first_token_seconds_bucket" => Some(match le(s) {
            l if l < 0.04 => 0.0,
            l if l < 0.06 => 50.0,
            l if l < 0.25 => 90.0,
            _ => 100.0,
        }),
        "vllm:time_to_first_token_seconds_count" => Some(100.0),
        "vllm:time_to_first_token_seconds_sum" => Some(6.0),
        // 35 requests, all in (1.5, 2.0], 70 s in total.
        "vllm:e2e_request_latency_seconds_bucket" => Some(if le(s) < 2.0 { 0.0 } else { 35.0 }),
        "vllm:e2e_request_latency_seconds_count" | "vllm:request_queue_time_seconds_count" => Some(35.0),
        "vllm:e2e_request_latency_seconds_sum" => Some(70.0),
        "vllm:request_queue_time_seconds_sum" => Some(3.5),
        _ => None,
    })
}

#[test]
fn detects_engines() {
    assert_eq!(detect_engine(&parse(&fixture("vllm.txt"))), Some(Engine::Vllm));
    assert_eq!(detect_engine(&parse(&fixture("triton.txt"))), Some(Engine::Triton));
    assert_eq!(detect_engine(&parse(TGI)), Some(Engine::Tgi));
    assert_eq!(detect_engine(&parse(&fixture("dcgm.txt"))), None);
    // Triton's vLLM backend exports both families.
    let both = format!("{}{}", fixture("triton.txt"), fixture("vllm.txt"));
    assert_eq!(detect_engine(&parse(&both)), Some(Engine::Vllm));
}

#[test]
fn vllm_interval_stats() {
    let first = fixture("vllm.txt");
    let second = vllm_second(&first);
    let mut t = EngineTracker::new();
    assert_eq!(t.update(&parse(&first), 10.0), None, "first scrape has no deltas");
    let st = t.update(&parse(&second), 10.0).unwrap();
    assert_eq!(st.engine, Engine::Vllm);
    assert_eq!(st.interval_s, 10.0);
    assert_eq!((st.queue_depth, st.running), (3.0, 8.0));
    assert_close(st.kv_cache_pct.unwrap(), 41.72);
    assert_close(st.prompt_tokens_per_s, 500.0);
    assert_close(st.generation_tokens_per_s, 200.0);
    assert_close(st.requests_per_s, 3.0);
    assert_close(st.failures_per_s, 0.5);
    assert_close(st.preemptions_per_s, 0.3);
    assert_quantiles(st.ttft, [0.04, 0.1 + 0.15 * 0.5, 0.1 + 0.15 * 0.9]);
    assert_quantiles(st.e2e, [1.75, 1.975, 1.995]);
    assert_close(st.e2e_mean_s.unwrap(), 2.0);
    assert_close(st.queue_time_mean_s.unwrap(), 0.1);
    assert_eq!(st.itl, None, "no inter-token observations in the interval");
    assert_eq!(st.batch_size_mean, None);
}

#[test]
fn counter_and_histogram_reset() {
    let first = fixture("vllm.txt");
    let mut t = EngineTracker::new();
    t.update(&parse(&vllm_second(&first)), 10.0);
    // The engine restarted: every counter is below its previous value, so its current value is the increase.
    let st = t.update(&parse(&first), 10.0).unwrap();
    assert_close(st.prompt_tokens_per_s, 18234.4);
    assert_close(st.generation_tokens_per_s, 2745.3);
    assert_close(st.requests_per_s, 13.2);
    assert_close(st.failures_per_s, 0.0);
    assert_close(st.preemptions_per_s, 0.2);
    // The whole fixture histogram: 13 in (0.01, 0.02], 84 in (0.02, 0.04], 26 in (0.04, 0.06], ...
    let q = st.ttft.unwrap();
    assert_close(q.p50_s, 0.02 + 0.02 * (57.0 / 84.0));
    assert_close(q.p95_s, 0.06 + 0.02 * (10.0 / 15.0));
    assert_close(q.p99_s, 0.08 + 0.02 * (0.6 / 2.0));
    // Inter-token latency did not move between the two scrapes: nothing observed, no reset.
    assert_eq!(st.itl, None);
}

#[test]
fn new_series_set_a_baseline_and_gauges_sum_over_label_sets() {
    let first = fixture("vllm.txt");
    let mut second = vllm_second(&first);
    second.push_str(concat!(
        "vllm:prompt_tokens_total{engine=\"1\",model_name=\"other\"} 99999.0\n",
        "vllm:num_requests_waiting{engine=\"1\",model_name=\"other\"} 4.0\n",
        "vllm:num_requests_running{engine=\"1\",model_name=\"other\"} 2.0\n",
        "vllm:kv_cache_usage_perc{engine=\"1\",model_name=\"other\"} 0.9\n",
    ));
    let mut t = EngineTracker::new();
    t.update(&parse(&first), 10.0);
    let st = t.update(&parse(&second), 10.0).unwrap();
    assert_close(st.prompt_tokens_per_s, 500.0);
    assert_eq!((st.queue_depth, st.running), (7.0, 10.0));
    assert_close(st.kv_cache_pct.unwrap(), 90.0);
}

#[test]
fn tracker_rejects_bad_intervals_and_engine_changes() {
    let vllm = parse(&fixture("vllm.txt"));
    let triton = parse(&fixture("triton.txt"));
    let mut t = EngineTracker::new();
    assert_eq!(t.update(&vllm, 10.0), None);
    assert_eq!(t.update(&vllm, 0.0), None);
    assert_eq!(t.update(&vllm, f64::NAN), None);
    assert!(t.update(&vllm, 10.0).is_some());
    assert_eq!(t.update(&triton, 10.0), None, "engine changed");
    assert!(t.update(&triton, 10.0).is_some());
    assert_eq!(t.update(&parse(""), 10.0), None, "no engine");
    assert_eq!(t.update(&triton, 10.0), None, "baseline again after a gap");
    // An unchanged scrape: zero rates, no quantiles.
    let st = t.update(&triton, 10.0).unwrap();
    assert_eq!((st.requests_per_s, st.running, st.batch_size_mean, st.ttft), (0.0, 0.0, None, None));
}

#[test]
fn vllm_v0_names() {
    let v0 = |k: f64| {
        format!(
            "vllm:gpu_cache_usage_perc{{model_name=\"m\"}} 0.25\n\
             vllm:num_requests_waiting{{model_name=\"m\"}} 2.0\n\
             vllm:time_per_output_token_seconds_bucket{{le=\"0.01\",model_name=\"m\"}} {}\n\
             vllm:time_per_output_token_seconds_bucket{{le=\"0.05\",model_name=\"m\"}} {}\n\
             vllm:time_per_output_token_seconds_bucket{{le=\"+Inf\",model_name=\"m\"}} {}\n",
            10.0 * k,
            30.0 * k,
            40.0 * k
        )
    };
    let mut t = EngineTracker::new();
    t.update(&parse(&v0(1.0)), 5.0);
    let st = t.update(&parse(&v0(2.0)), 5.0).unwrap();
    assert_close(st.kv_cache_pct.unwrap(), 25.0);
    assert_eq!(st.queue_depth, 2.0);
    // 10 in (0, 0.01], 20 in (0.01, 0.05], 10 above: p50 is rank 20.
    assert_quantiles(st.itl, [0.01 + 0.04 * 0.5, 0.05, 0.05]);
}

#[test]
fn triton_interval_stats() {
    let first = fixture("triton.txt");
    let resnet = |s: &Sample| s.label("model") == Some("resnet50_trt");
    // 10 s, resnet50 only: 100 requests in 100 executions of 32, 5 ms each of which 1 ms queued, 2 rejected;
    // first responses: 80 in (0, 100] ms, 20 in (100, 500] ms.
    let second = bump(&first, |s| {
        if !resnet(s) {
            return None;
        }
        match s.name.as_str() {
            "nv_inference_request_success" => Some(100.0),
            "nv_inference_request_failure" => (s.label("reason") == Some("REJECTED")).then_some(2.0),
            "nv_inference_count" => Some(3200.0),
            "nv_inference_exec_count" => Some(100.0),
            "nv_inference_request_duration_us" => Some(500_000.0),
            "nv_inference_queue_duration_us" => Some(100_000.0),
            "nv_inference_first_response_histogram_ms_bucket" => Some(if le(s) <= 100.0 { 80.0 } else { 100.0 }),
            "nv_inference_first_response_histogram_ms_count" => Some(100.0),
            _ => None,
        }
    });
    let mut t = EngineTracker::new();
    assert_eq!(t.update(&parse(&first), 10.0), None);
    let st = t.update(&parse(&second), 10.0).unwrap();
    assert_eq!(st.engine, Engine::Triton);
    assert_eq!(st.queue_depth, 7.0);
    assert_close(st.requests_per_s, 10.0);
    assert_close(st.failures_per_s, 0.2);
    assert_close(st.batch_size_mean.unwrap(), 32.0);
    assert_close(st.e2e_mean_s.unwrap(), 0.005);
    assert_close(st.queue_time_mean_s.unwrap(), 0.001);
    assert_close(st.running, 0.04);
    assert_quantiles(st.ttft, [0.0625, 0.4, 0.48]);
    assert_eq!((st.itl, st.e2e, st.kv_cache_pct), (None, None, None));
}

/// TGI's /metrics as metrics-exporter-prometheus renders it (no fixture captured yet).
const TGI: &str = "\
# TYPE tgi_queue_size gauge
tgi_queue_size 4
# TYPE tgi_batch_current_size gauge
tgi_batch_current_size 12
# TYPE tgi_batch_current_max_tokens gauge
tgi_batch_current_max_tokens 8192
# TYPE tgi_request_count counter
tgi_request_count 1000
# TYPE tgi_request_success counter
tgi_request_success 990
# TYPE tgi_request_failure counter
tgi_request_failure{err=\"validation\"} 10
# TYPE tgi_request_duration histogram
tgi_request_duration_bucket{le=\"0.5\"} 100
tgi_request_duration_bucket{le=\"1\"} 400
tgi_request_duration_bucket{le=\"2\"} 900
tgi_request_duration_bucket{le=\"5\"} 985
tgi_request_duration_bucket{le=\"+Inf\"} 990
tgi_request_duration_sum 1290.5
tgi_request_duration_count 990
# TYPE tgi_request_queue_duration histogram
tgi_request_queue_duration_bucket{le=\"0.01\"} 800
tgi_request_queue_duration_bucket{le=\"0.1\"} 980
tgi_request_queue_duration_bucket{le=\"+Inf\"} 990
tgi_request_queue_duration_sum 12.5
tgi_request_queue_duration_count 990
# TYPE tgi_request_mean_time_per_token_duration histogram
tgi_request_mean_time_per_token_duration_bucket{le=\"0.01\"} 50
tgi_request_mean_time_per_token_duration_bucket{le=\"0.02\"} 500
tgi_request_mean_time_per_token_duration_bucket{le=\"0.05\"} 950
tgi_request_mean_time_per_token_duration_bucket{le=\"+Inf\"} 990
tgi_request_mean_time_per_token_duration_sum 24.75
tgi_request_mean_time_per_token_duration_count 990
# TYPE tgi_request_input_length histogram
tgi_request_input_length_bucket{le=\"128\"} 200
tgi_request_input_length_bucket{le=\"1024\"} 900
tgi_request_input_length_bucket{le=\"+Inf\"} 990
tgi_request_input_length_sum 506880
tgi_request_input_length_count 990
# TYPE tgi_request_generated_tokens histogram
tgi_request_generated_tokens_bucket{le=\"64\"} 300
tgi_request_generated_tokens_bucket{le=\"512\"} 990
tgi_request_generated_tokens_bucket{le=\"+Inf\"} 990
tgi_request_generated_tokens_sum 198000
tgi_request_generated_tokens_count 990
# TYPE tgi_batch_next_size histogram
tgi_batch_next_size_bucket{le=\"1\"} 400
tgi_batch_next_size_bucket{le=\"8\"} 700
tgi_batch_next_size_bucket{le=\"+Inf\"} 700
tgi_batch_next_size_sum 2100
tgi_batch_next_size_count 700
";

#[test]
fn tgi_interval_stats() {
    assert!(parse(TGI).errors.is_empty());
    // 5 s: 50 requests, 5 failed, 25000 prompt and 10000 generated tokens, all 50 taking (1, 2] s (100 s in
    // total) with (0.02, 0.05] s per token, queued 0.5 s in total.
    let second = bump(TGI, |s| match s.name.as_str() {
        "tgi_request_success" | "tgi_request_count" => Some(50.0),
        "tgi_request_failure" => Some(5.0),
        "tgi_request_input_length_sum" => Some(25_000.0),
        "tgi_request_generated_tokens_sum" => Some(10_000.0),
        "tgi_request_duration_bucket" => Some(if le(s) < 2.0 { 0.0 } else { 50.0 }),
        "tgi_request_duration_sum" => Some(100.0),
        "tgi_request_mean_time_per_token_duration_bucket" => Some(if le(s) < 0.05 { 0.0 } else { 50.0 }),
        "tgi_request_queue_duration_sum" => Some(0.5),
        n if n.ends_with("_count") => Some(50.0),
        _ => None,
    });
    let mut t = EngineTracker::new();
    assert_eq!(t.update(&parse(TGI), 5.0), None);
    let st = t.update(&parse(&second), 5.0).unwrap();
    assert_eq!(st.engine, Engine::Tgi);
    assert_eq!((st.queue_depth, st.running), (4.0, 12.0));
    assert_close(st.requests_per_s, 10.0);
    assert_close(st.failures_per_s, 1.0);
    assert_close(st.prompt_tokens_per_s, 5000.0);
    assert_close(st.generation_tokens_per_s, 2000.0);
    assert_quantiles(st.e2e, [1.5, 1.95, 1.99]);
    assert_quantiles(st.itl, [0.035, 0.02 + 0.03 * 0.95, 0.02 + 0.03 * 0.99]);
    assert_close(st.e2e_mean_s.unwrap(), 2.0);
    assert_close(st.queue_time_mean_s.unwrap(), 0.01);
    assert_eq!((st.ttft, st.kv_cache_pct, st.batch_size_mean), (None, None, None));
}

// ---------------------------------------------------------------------------------------------------------------
// DCGM.

#[test]
fn dcgm_two_gpu_node() {
    let gpus = dcgm_gpus(&parse(&fixture("dcgm.txt")));
    assert_eq!(gpus.len(), 2);
    let g0 = &gpus[0];
    assert_eq!(
        *g0,
        DcgmGpu {
            index: Some(0),
            uuid: "GPU-5b3c1a2e-8f0d-4d7e-9a61-3c2b7f4e9d10".into(),
            model_name: Some("NVIDIA H100 80GB HBM3".into()),
            hostname: Some("gpu-node-07".into()),
            pci_bus_id: Some("00000000:18:00.0".into()),
            driver_version: Some("570.133.20".into()),
            mig: None,
            pod: Some("vllm-llama-0".into()),
            namespace: Some("inference".into()),
            container: Some("vllm".into()),
            util_pct: Some(97.0),
            mem_copy_util_pct: Some(61.0),
            fb_used_mib: Some(74514.0),
            fb_free_mib: Some(6113.0),
            power_w: Some(512.377),
            energy_mj: Some(918_273_645_123.0),
            temperature_c: Some(58.0),
            memory_temperature_c: Some(47.0),
            sm_clock_mhz: Some(1980.0),
            mem_clock_mhz: Some(2619.0),
            xid_last: Some(0),
            gr_engine_active: Some(0.962311),
            sm_active: Some(0.713452),
            sm_occupancy: Some(0.221876),
            tensor_active: Some(0.38712),
            dram_active: Some(0.604339),
        }
    );
    let g1 = &gpus[1];
    assert_eq!((g1.index, g1.uuid.as_str()), (Some(1), "GPU-a0e4d6c2-17b9-4c3f-8e55-6f1d2b9a7c84"));
    assert_eq!((&g1.pod, &g1.namespace, &g1.container), (&None, &None, &None));
    assert_eq!(
        (g1.util_pct, g1.fb_used_mib, g1.fb_free_mib, g1.power_w),
        (Some(0.0), Some(0.0), Some(80627.0), Some(71.804))
    );
    assert_eq!((g1.temperature_c, g1.sm_clock_mhz, g1.sm_active), (Some(31.0), Some(345.0), Some(0.0)));
}

#[test]
fn dcgm_edge_cases() {
    let gpus = dcgm_gpus(&parse(&fixture("dcgm_edge.txt")));
    let ids: Vec<(Option<u32>, &str, Option<&str>)> =
        gpus.iter().map(|g| (g.index, &g.uuid[..12], g.mig.as_ref().map(|m| m.instance_id.as_str()))).collect();
    assert_eq!(
        ids,
        [
            (Some(0), "GPU-5b3c1a2e", None),
            (Some(0), "GPU-604ac76c", None),
            (Some(0), "GPU-ed1353d6", Some("1")),
            (Some(0), "GPU-ed1353d6", Some("2"))
        ]
    );
    // The README sample: the blank sentinel is no value.
    let readme = &gpus[1];
    assert_eq!(
        (readme.sm_clock_mhz, readme.mem_clock_mhz, readme.memory_temperature_c),
        (Some(139.0), Some(405.0), None)
    );
    assert_eq!((&readme.model_name, &readme.hostname), (&None, &None));
    // MIG instances.
    let mig = gpus[2].mig.as_ref().unwrap();
    assert_eq!(mig.profile.as_deref(), Some("3g.40gb"));
    assert_eq!(gpus[2].gr_engine_active, Some(0.523118));
    assert_eq!(gpus[3].mig.as_ref().unwrap().profile.as_deref(), Some("4g.40gb"));
    assert_eq!(gpus[3].gr_engine_active, Some(0.0));
    assert_eq!(gpus[2].hostname.as_deref(), Some("gpu-node-03"));
    // The newer lowercase hostname label.
    assert_eq!((gpus[0].hostname.as_deref(), gpus[0].temperature_c), (Some("gpu-node-07"), Some(58.0)));
}

#[test]
fn dcgm_blank_values() {
    let l = "{gpu=\"0\",UUID=\"GPU-x\"}";
    let text = format!(
        "DCGM_FI_DEV_POWER_USAGE{l} 140737488355328.000000\n\
         DCGM_FI_PROF_SM_ACTIVE{l} 140737488355330.000000\n\
         DCGM_FI_DEV_GPU_UTIL{l} 2147483632\n\
         DCGM_FI_DEV_FB_USED{l} 2147483635\n\
         DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{l} 2147483640\n\
         DCGM_FI_DEV_GPU_TEMP{l} 9223372036854775792\n\
         DCGM_FI_DEV_MEMORY_TEMP{l} NaN\n\
         DCGM_FI_DEV_SM_CLOCK{l} 9223372036854775807\n\
         DCGM_FI_DEV_XID_ERRORS{l} 79\n\
         DCGM_FI_DEV_MEM_CLOCK{l} 1593\n\
         DCGM_FI_DEV_FB_FREE{{UUID=\"GPU-x\",gpu=\"0\",err_code=\"x\"}} 1024\n\
         DCGM_FI_DRIVER_INFO{{version=\"1\"}} 1\n"
    );
    let gpus = dcgm_gpus(&parse(&text));
    assert_eq!(gpus.len(), 1, "{gpus:?}");
    let g = &gpus[0];
    assert_eq!((g.power_w, g.sm_active, g.util_pct, g.fb_used_mib), (None, None, None, None));
    assert_eq!(
        (g.energy_mj, g.temperature_c, g.memory_temperature_c, g.sm_clock_mhz),
        (Some(2147483640.0), None, None, None)
    );
    assert_eq!((g.xid_last, g.mem_clock_mhz, g.fb_free_mib), (Some(79), Some(1593.0), Some(1024.0)));
}
