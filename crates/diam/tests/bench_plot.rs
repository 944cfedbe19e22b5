//! `diam bench --plot FILE` against `diam serve` processes.
//!
//! * A 2 s run writes an SVG that is well-formed XML, names the run in its
//!   title, has the legend entries `req/s`, `p50` and `p99`, and one point
//!   per 100 ms in each series (at least 15 of the 20).
//! * Three peers, one SIGKILLed mid-run: the chart marks its disconnection
//!   (or its peer going down) with a labelled marker.
//! * A `--plot` path that cannot be written exits 2 before any traffic.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{diam, json_stdout, run_diam, start_serve, Proc, TempDir};
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// What the test reads out of the SVG.
#[derive(Debug, Default)]
struct Svg {
    /// The `<title>` text.
    title: String,
    /// Every `<text>` element's text, trimmed.
    texts: Vec<String>,
    /// `<text>` elements by class.
    texts_by_class: BTreeMap<String, Vec<String>>,
    /// Points of the `<polyline>`s by class, summed.
    points_by_class: BTreeMap<String, usize>,
}

fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.attributes()
        .map(|a| a.unwrap_or_else(|err| panic!("bad attribute in <{:?}>: {err}", e.name())))
        .find(|a| a.key.as_ref() == name.as_bytes())
        .map(|a| a.unescape_value().expect("attribute value").into_owned())
}

/// Parses `text` as XML, panicking unless it is well-formed: matching end
/// tags, valid attributes, one root element (`<svg>`), nothing left open.
fn parse_svg(text: &str) -> Svg {
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut svg = Svg::default();
    let mut stack: Vec<String> = Vec::new();
    let mut roots = 0;
    // The open <text> or <title>: its class and text so far.
    let mut open_text: Option<(Option<String>, String)> = None;
    loop {
        let ev = reader
            .read_event()
            .unwrap_or_else(|e| panic!("not well-formed XML at byte {}: {e}", reader.buffer_position()));
        match ev {
            Event::Start(e) | Event::Empty(e) if stack.is_empty() => {
                roots += 1;
                assert_eq!(e.name().as_ref(), b"svg", "the root element is not <svg>");
                assert!(attr(&e, "xmlns").is_some(), "the root has no xmlns");
                stack.push("svg".into());
            }
            Event::Start(e) => {
                let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
                let class = attr(&e, "class");
                if name == "text" || name == "title" {
                    open_text = Some((class, String::new()));
                }
                stack.push(name);
            }
            Event::Empty(e) => {
                let class = attr(&e, "class");
                if e.name().as_ref() == b"polyline" {
                    let points = attr(&e, "points").expect("a polyline has points");
                    let n = points.split_whitespace().filter(|p| p.contains(',')).count();
                    *svg.points_by_class.entry(class.unwrap_or_default()).or_default() += n;
                }
            }
            Event::Text(t) => {
                if let Some((_, s)) = &mut open_text {
                    s.push_str(&t.decode().expect("text is UTF-8"));
                }
            }
            Event::GeneralRef(r) => {
                if let Some((_, s)) = &mut open_text {
                    let name = r.decode().expect("entity name");
                    s.push_str(match name.as_ref() {
                        "lt" => "<",
                        "gt" => ">",
                        "amp" => "&",
                        "quot" => "\"",
                        "apos" => "'",
                        other => panic!("undeclared entity &{other};"),
                    });
                }
            }
            Event::End(_) => {
                let name = stack.pop().expect("an end tag with nothing open");
                if name == "text" || name == "title" {
                    let (class, s) = open_text.take().expect("text was open");
                    let s = s.trim().to_string();
                    if name == "title" {
                        svg.title = s;
                    } else {
                        if let Some(c) = class {
                            svg.texts_by_class.entry(c).or_default().push(s.clone());
                        }
                        svg.texts.push(s);
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    assert!(stack.is_empty(), "elements left open at the end: {stack:?}");
    assert_eq!(roots, 1, "one root element");
    svg
}

fn read_svg(path: &Path) -> (String, Svg) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let svg = parse_svg(&text);
    (text, svg)
}

#[test]
fn bench_plot_writes_a_well_formed_svg_with_both_panels() {
    let (_serve, addr) = start_serve(&[]);
    let dir = TempDir::new("bench-plot");
    let out = dir.path().join("out.svg");
    let addr = addr.to_string();
    let f = run_diam(
        &["bench", "--peer", &addr, "--duration", "2", "--inflight", "16", "--plot", out.to_str().unwrap(), "--json"],
        60,
    );
    assert!(f.success(), "{}", f.describe());
    let r = json_stdout(&f);
    assert!(r["answers"].as_u64().unwrap() > 0, "{r}");

    let (text, svg) = read_svg(&out);
    assert!(svg.title.contains(&addr) && svg.title.contains("inflight 16"), "title: {:?}", svg.title);
    for label in ["req/s", "p50", "p99"] {
        assert!(svg.texts.iter().any(|t| t == label), "no legend entry {label:?} in {:?}", svg.texts);
    }
    // 2 s in 100 ms buckets: 20 points (21 with the requests still
    // outstanding at the end); at least 15 in every series.
    for class in ["series series-rps", "series series-p50", "series series-p99"] {
        let n = svg.points_by_class.get(class).copied().unwrap_or(0);
        assert!((15..=30).contains(&n), "{n} points of {class}: {:?}\n{text}", svg.points_by_class);
    }
    // Nothing failed, so no error series and no markers.
    assert!(!svg.points_by_class.contains_key("series series-errors"), "{:?}", svg.points_by_class);
    assert!(
        svg.texts_by_class.keys().all(|c| !c.starts_with("marker")),
        "markers without a lifecycle event: {:?}",
        svg.texts_by_class
    );
}

#[test]
fn bench_plot_marks_a_sigkilled_peer() {
    let mut serves: Vec<(Proc, String)> = (0..3)
        .map(|_| {
            let (p, a) = start_serve(&[]);
            (p, a.to_string())
        })
        .collect();
    let peers: Vec<String> = serves.iter().map(|(_, a)| a.clone()).collect();
    let victim = peers[0].clone();
    let dir = TempDir::new("bench-plot-kill");
    let out = dir.path().join("kill.svg");
    let mut cmd = diam();
    cmd.args(["bench", "--peer", &peers.join(","), "--duration", "4", "--inflight", "32", "--json", "--plot"])
        .arg(&out);
    let mut bench = Proc::spawn("bench", &cmd, false).expect("starting diam bench");
    std::thread::sleep(Duration::from_millis(1500));
    serves[0].0.kill();

    let status = bench.wait_exit(Duration::from_secs(60));
    bench.all.wait_eof(Duration::from_secs(5));
    let status = status.unwrap_or_else(|| panic!("diam bench did not finish\n{}", bench.dump()));
    assert!(status.success(), "exit {status:?}\n{}", bench.dump());

    let (text, svg) = read_svg(&out);
    let marked: Vec<&String> = ["marker marker-disconnected", "marker marker-peer-down"]
        .iter()
        .filter_map(|c| svg.texts_by_class.get(*c))
        .flatten()
        .collect();
    assert!(
        marked.iter().any(|t| t.contains(&victim)),
        "no disconnected/peer down marker for {victim}: {:?}\n{text}",
        svg.texts_by_class
    );
    // Each marker is a labelled line through both panels.
    let lines = svg.points_by_class.get("marker marker-disconnected").copied().unwrap_or(0)
        + svg.points_by_class.get("marker marker-peer-down").copied().unwrap_or(0);
    assert!(lines >= 4, "marker lines: {:?}", svg.points_by_class);
    // The survivors carried on: the run's series are all there.
    assert!(svg.points_by_class.get("series series-rps").copied().unwrap_or(0) >= 35, "{:?}", svg.points_by_class);
    // Their closing at the end of the run is the bench's own shutdown, not marked.
    for survivor in &peers[1..] {
        assert!(!marked.iter().any(|t| t.contains(survivor.as_str())), "{survivor} marked: {marked:?}");
    }
    drop(serves);
}

#[test]
fn bench_plot_rejects_an_unwritable_path_before_any_traffic() {
    let (serve, addr) = start_serve(&[]);
    let dir = TempDir::new("bench-plot-bad");
    let addr = addr.to_string();
    let missing = dir.path().join("no-such-dir").join("out.svg");
    let existing_dir = dir.path().to_str().unwrap().to_string();
    for path in [missing.to_str().unwrap(), existing_dir.as_str()] {
        let f = run_diam(&["bench", "--peer", &addr, "--duration", "2", "--plot", path], 30);
        assert_eq!(f.code(), Some(2), "{}", f.describe());
        assert!(f.stderr.contains("--plot") && f.stderr.contains(path), "{}", f.describe());
        assert!(f.elapsed < Duration::from_secs(2), "it ran first: {}", f.describe());
        assert!(f.stdout.trim().is_empty(), "{}", f.describe());
    }
    assert!(!missing.exists());
    // No connection reached the server.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(serve.out.count(|l| l.contains("peer_up")), 0, "{}", serve.dump());
}

/// The well-formedness check itself can fail.
#[test]
fn the_svg_check_rejects_malformed_xml() {
    for bad in [
        "<svg xmlns=\"http://www.w3.org/2000/svg\"><text>x</svg>",
        "<svg xmlns=\"http://www.w3.org/2000/svg\"><polyline points=\"1,2\"></svg>",
        "<svg xmlns=\"http://www.w3.org/2000/svg\"><rect x=\"1\" x=\"2\"/></svg>",
        "<svg xmlns=\"http://www.w3.org/2000/svg\">",
        "<svg xmlns=\"http://www.w3.org/2000/svg\"/><svg xmlns=\"x\"/>",
    ] {
        let caught = std::panic::catch_unwind(|| parse_svg(bad));
        assert!(caught.is_err(), "accepted: {bad}");
    }
    let ok = parse_svg(
        "<svg xmlns=\"http://www.w3.org/2000/svg\"><title>a &amp; b</title>\
         <polyline class=\"s\" points=\"1,2 3,4 \"/><text class=\"m\">\nx\n</text></svg>\n",
    );
    assert_eq!(ok.title, "a & b");
    assert_eq!(ok.points_by_class["s"], 2);
    assert_eq!(ok.texts_by_class["m"], ["x"]);
}
