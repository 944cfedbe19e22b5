//! `diam bench --plot FILE`: answers per second and p50/p99 latency per
//! 100 ms over the run, with lifecycle events marked on the time axis, as
//! an SVG drawn by `plotters`.
//!
//! * Collection is off the hot path's locks: each closed-loop worker keeps
//!   its recent buckets in its local tally and moves them into the shared
//!   one when it flushes (every 100 ms, under the lock it already takes);
//!   the open loop records under the tally lock it already takes per
//!   request. A bucket index is a division of the completion time the
//!   worker already has; bucket histograms are reused, so a request
//!   allocates nothing.
//! * Buckets are 100 ms wide; a run longer than 200 s gets wider buckets
//!   (a multiple of 100 ms) so the chart keeps at most [`MAX_BUCKETS`]
//!   points and memory stays bounded.
//! * Markers are the `disconnected`, `reconnected`, `peer_down`, circuit
//!   breaker open/closed and failover events, kept as they come (the event
//!   is cloned, cheap, into room reserved for [`MAX_MARKS`]) and laid out
//!   after the run.
//! * The SVG backend alone: text goes out as `<text>` elements that the
//!   viewer lays out, so no font file is needed. Each series' polylines get
//!   a `class` (`series series-rps`, `series-errors`, `series-p50`,
//!   `series-p99`), each marker's line and label `marker marker-KIND`
//!   (`disconnected`, `reconnected`, `peer-down`, `breaker-open`,
//!   `breaker-closed`, `failover`), so a script can find them; the legend
//!   names the series (`req/s`, `errors/s`, `p50`, `p99`). Each bucket with
//!   errors also gets a dot (`circle`, class `series series-errors`): a few
//!   errors among many answers are otherwise a flat line at zero.
//! * Marker labels are laid out in rows at the top of the upper panel,
//!   clear of each other and of the legend, and that panel's y range leaves
//!   the rows used (and the legend) above the series.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use diam_link::breaker::{BreakerEvent, BreakerState};
use diam_link::events::{Event, EventData, EventKind};
use diam_link::failover::FailoverEvent;
use hdrhistogram::Histogram;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use tokio::time::Instant;

use crate::Failure;

/// Width of a bucket for runs up to `MAX_BUCKETS × BUCKET`.
const BUCKET: Duration = Duration::from_millis(100);
/// Most buckets a run gets (longer runs get wider buckets).
const MAX_BUCKETS: u64 = 2000;
/// Highest latency a bucket's histogram tracks (larger values saturate).
const MAX_LATENCY_US: u64 = 60_000_000;
/// Most lifecycle events kept for markers.
const MAX_MARKS: usize = 500;
/// Rows of marker labels at the top of the upper panel.
const LABEL_ROWS: usize = 8;
/// Height of a row of marker labels, pixels.
const ROW_PX: i32 = 14;
/// Rows the upper panel's legend covers at its top right, and its width
/// with some room (two entries at 14 px are about 52 × 105 px).
const LEGEND_ROWS: usize = 4;
const LEGEND_PX: i32 = 120;

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 780;

// ---------------------------------------------------------------------------
// Collection

/// The run's time origin and bucket width.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    start: Instant,
    wall: SystemTime,
    width_us: u64,
}

impl Clock {
    /// Starts now, for a run of `window`.
    pub(crate) fn start(window: Duration) -> Clock {
        let bucket_us = BUCKET.as_micros() as u64;
        let window_us = u64::try_from(window.as_micros()).unwrap_or(u64::MAX);
        let widen = window_us.div_ceil(bucket_us * MAX_BUCKETS).max(1);
        Clock { start: Instant::now(), wall: SystemTime::now(), width_us: bucket_us * widen }
    }

    /// The bucket of something that completed at `at` (u64 arithmetic: the
    /// per-request cost is one division).
    fn index(&self, at: Instant) -> u32 {
        let d = at.saturating_duration_since(self.start);
        let us = d.as_secs().saturating_mul(1_000_000).saturating_add(u64::from(d.subsec_micros()));
        u32::try_from(us / self.width_us).unwrap_or(u32::MAX)
    }

    fn width_s(&self) -> f64 {
        self.width_us as f64 / 1e6
    }

    /// Seconds from the start to `t` (0 for anything earlier).
    fn offset_s(&self, t: SystemTime) -> f64 {
        t.duration_since(self.wall).map_or(0.0, |d| d.as_secs_f64())
    }
}

#[derive(Debug)]
struct Slot {
    index: u32,
    answers: u64,
    errors: u64,
    /// Latency of the answers, µs.
    hist: Histogram<u32>,
}

fn bucket_histogram() -> Histogram<u32> {
    // Two significant figures: 1 % is plenty for a chart, and it keeps a
    // bucket at about 10 kB.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).expect("valid histogram bounds")
}

/// Per-bucket outcomes: answers, errors (timeouts included) and answer
/// latency. Sparse and sorted by bucket index; a worker's local one holds
/// the few buckets since its last flush, the shared one the whole run.
#[derive(Debug)]
pub(crate) struct Buckets {
    clock: Clock,
    slots: Vec<Slot>,
    /// Emptied histograms, reused for the next buckets.
    spare: Vec<Histogram<u32>>,
}

impl Buckets {
    pub(crate) fn new(clock: Clock) -> Buckets {
        Buckets { clock, slots: Vec::new(), spare: Vec::new() }
    }

    fn slot(&mut self, index: u32) -> &mut Slot {
        // Completions come nearly in order: the last slot is the usual one.
        let pos = match self.slots.last() {
            Some(last) if last.index == index => self.slots.len() - 1,
            _ => match self.slots.binary_search_by_key(&index, |s| s.index) {
                Ok(p) => p,
                Err(p) => {
                    let hist = self.spare.pop().unwrap_or_else(bucket_histogram);
                    self.slots.insert(p, Slot { index, answers: 0, errors: 0, hist });
                    p
                }
            },
        };
        &mut self.slots[pos]
    }

    /// One completed request: `latency_us` for an answer, `None` for an
    /// error or a timeout.
    pub(crate) fn record(&mut self, done: Instant, latency_us: Option<u64>) {
        let slot = self.slot(self.clock.index(done));
        match latency_us {
            Some(us) => {
                slot.answers += 1;
                slot.hist.saturating_record(us.max(1));
            }
            None => slot.errors += 1,
        }
    }

    /// Moves everything from `other` into `self`, keeping `other`'s emptied
    /// histograms for its next buckets.
    pub(crate) fn absorb(&mut self, other: &mut Buckets) {
        for mut s in other.slots.drain(..) {
            let d = self.slot(s.index);
            d.answers += s.answers;
            d.errors += s.errors;
            // Same bounds on both sides; a u32 count overflowing is beyond
            // any run.
            let _ = d.hist.add(&s.hist);
            s.hist.reset();
            other.spare.push(s.hist);
        }
    }
}

/// The lifecycle events shown as markers.
#[derive(Debug)]
pub(crate) struct Marks {
    events: Mutex<Vec<Event>>,
    dropped: AtomicU64,
}

impl Marks {
    pub(crate) fn new() -> Marks {
        Marks { events: Mutex::new(Vec::with_capacity(MAX_MARKS)), dropped: AtomicU64::new(0) }
    }

    /// Keeps `ev` when it is a marker (called on the emitting task: a kind
    /// check, and for markers a clone into room reserved up front).
    pub(crate) fn on_event(&self, ev: &Event) {
        if mark_kind(ev).is_none() {
            return;
        }
        let mut v = self.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if v.len() < MAX_MARKS {
            v.push(ev.clone());
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A marker's kind (its class and colour), or `None` for other events.
fn mark_kind(ev: &Event) -> Option<MarkKind> {
    match (ev.kind(), ev.data()) {
        (EventKind::Disconnected, _) => Some(MarkKind::Disconnected),
        (EventKind::Reconnected, _) => Some(MarkKind::Reconnected),
        (EventKind::Custom, EventData::Custom(c)) => {
            if c.name() == "peer_down" {
                Some(MarkKind::PeerDown)
            } else if let Some(b) = c.downcast_ref::<BreakerEvent>() {
                match b.to() {
                    BreakerState::Open => Some(MarkKind::BreakerOpen),
                    BreakerState::Closed => Some(MarkKind::BreakerClosed),
                    _ => None,
                }
            } else {
                c.downcast_ref::<FailoverEvent>().map(|f| MarkKind::Failover(f.to().as_str()))
            }
        }
        _ => None,
    }
}

/// The peer a marker names: the event's, or for a failover the new active
/// member (`peers` by index).
fn mark_peer(ev: &Event, peers: &[String]) -> Option<String> {
    if let EventData::Custom(c) = ev.data() {
        if let Some(f) = c.downcast_ref::<FailoverEvent>() {
            return f.active().and_then(|i| peers.get(i)).cloned();
        }
    }
    ev.remote().map(ToString::to_string)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MarkKind {
    Disconnected,
    Reconnected,
    PeerDown,
    BreakerOpen,
    BreakerClosed,
    /// The failover machine's new state.
    Failover(&'static str),
}

impl MarkKind {
    fn class(self) -> &'static str {
        match self {
            MarkKind::Disconnected => "disconnected",
            MarkKind::Reconnected => "reconnected",
            MarkKind::PeerDown => "peer-down",
            MarkKind::BreakerOpen => "breaker-open",
            MarkKind::BreakerClosed => "breaker-closed",
            MarkKind::Failover(_) => "failover",
        }
    }

    fn label(self) -> String {
        match self {
            MarkKind::Disconnected => "disconnected".into(),
            MarkKind::Reconnected => "reconnected".into(),
            MarkKind::PeerDown => "peer down".into(),
            MarkKind::BreakerOpen => "breaker open".into(),
            MarkKind::BreakerClosed => "breaker closed".into(),
            MarkKind::Failover(to) => format!("failover {to}"),
        }
    }

    /// Each kind has a colour no series uses: the SVG's classes are
    /// assigned by colour.
    fn color(self) -> RGBColor {
        match self {
            MarkKind::Disconnected => RGBColor(0xD6, 0x27, 0x28),
            MarkKind::PeerDown => RGBColor(0x9E, 0x1B, 0x1B),
            MarkKind::Reconnected => RGBColor(0x17, 0xBE, 0xCF),
            MarkKind::BreakerOpen => RGBColor(0xE3, 0x77, 0xC2),
            MarkKind::BreakerClosed => RGBColor(0xBC, 0xBD, 0x22),
            MarkKind::Failover(_) => RGBColor(0x94, 0x67, 0xBD),
        }
    }

    const ALL: [MarkKind; 6] = [
        MarkKind::Disconnected,
        MarkKind::Reconnected,
        MarkKind::PeerDown,
        MarkKind::BreakerOpen,
        MarkKind::BreakerClosed,
        MarkKind::Failover(""),
    ];
}

const RPS: RGBColor = RGBColor(0x1F, 0x77, 0xB4);
const ERRORS: RGBColor = RGBColor(0x8C, 0x56, 0x4B);
const P50: RGBColor = RGBColor(0x2C, 0xA0, 0x2C);
const P99: RGBColor = RGBColor(0xFF, 0x7F, 0x0E);

// ---------------------------------------------------------------------------
// Output

/// The `--plot` file, opened before any traffic so that a bad path fails
/// at once (exit 2). Removed again if the run ends without a chart.
#[derive(Debug)]
pub(crate) struct Output {
    path: PathBuf,
    file: Option<File>,
}

impl Output {
    pub(crate) fn create(path: &Path) -> Result<Output, Failure> {
        let file = File::create(path).map_err(|e| Failure::input(format!("--plot {}: {e}", path.display())))?;
        Ok(Output { path: path.to_path_buf(), file: Some(file) })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Draws the chart and writes it.
    pub(crate) fn write(mut self, run: &Run<'_>, buckets: Option<&Buckets>, marks: &Marks) -> Result<(), String> {
        let events = std::mem::take(&mut *marks.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let dropped = marks.dropped.load(Ordering::Relaxed);
        let svg = render(run, buckets, &events, dropped)?;
        let mut file = self.file.take().ok_or("already written")?;
        file.write_all(svg.as_bytes()).and_then(|()| file.flush()).map_err(|e| e.to_string())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// What the title says about the run.
#[derive(Debug)]
pub(crate) struct Run<'a> {
    pub(crate) peers: &'a [String],
    pub(crate) inflight: usize,
    pub(crate) rate: Option<f64>,
    pub(crate) window: Duration,
    /// How long the run took, outstanding requests included; events after
    /// it are the bench's own shutdown and are not marked.
    pub(crate) ran: Duration,
}

impl Run<'_> {
    fn title(&self) -> String {
        let mut peers = self.peers.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
        if self.peers.len() > 3 {
            peers.push_str(&format!(" (+{} more)", self.peers.len() - 3));
        }
        let load = match self.rate {
            Some(r) => format!("rate {r} req/s, at most {} in flight", self.inflight),
            None => format!("inflight {}", self.inflight),
        };
        format!("diam bench → {peers} · {load} · {} s", self.window.as_secs_f64())
    }
}

/// One bucket's figures.
struct Point {
    t: f64,
    rps: f64,
    errors: f64,
    p50: Option<f64>,
    p99: Option<f64>,
}

/// Every bucket from the start to the last one with an outcome. The last
/// bucket (the requests still outstanding when sending stopped) is often cut
/// short by the end of the run: its rates are over the part it covers.
fn points(buckets: Option<&Buckets>, clock: Option<Clock>, window: Duration, ran: Duration) -> Vec<Point> {
    let Some((b, clock)) = buckets.zip(clock) else { return Vec::new() };
    let w = clock.width_s();
    let ran = ran.as_secs_f64();
    let expected = (window.as_secs_f64() / w).ceil() as u32;
    let n = b.slots.last().map_or(expected, |s| expected.max(s.index + 1));
    let mut it = b.slots.iter().peekable();
    (0..n)
        .map(|i| {
            let slot = it.next_if(|s| s.index == i);
            let q = |q: f64| slot.filter(|s| !s.hist.is_empty()).map(|s| s.hist.value_at_quantile(q) as f64);
            let from = f64::from(i) * w;
            let span = (ran - from).clamp(0.001_f64.min(w), w);
            Point {
                t: from + span / 2.0,
                rps: slot.map_or(0.0, |s| s.answers as f64 / span),
                errors: slot.map_or(0.0, |s| s.errors as f64 / span),
                p50: q(0.50),
                p99: q(0.99),
            }
        })
        .collect()
}

/// Consecutive points that have a value, as line segments.
fn segments(points: &[Point], f: impl Fn(&Point) -> Option<f64>) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut current = Vec::new();
    for p in points {
        match f(p) {
            Some(v) => current.push((p.t, v)),
            None if !current.is_empty() => out.push(std::mem::take(&mut current)),
            None => {}
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// One marker, placed.
struct Mark {
    t: f64,
    kind: MarkKind,
    label: String,
}

fn compact(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn log_label(v: f64) -> String {
    let mantissa = v / 10f64.powf(v.log10().floor());
    if [1.0, 2.0, 5.0].iter().any(|m| (mantissa - m).abs() < 0.05) {
        compact(v)
    } else {
        String::new()
    }
}

fn render(run: &Run<'_>, buckets: Option<&Buckets>, events: &[Event], dropped: u64) -> Result<String, String> {
    let clock = buckets.map(|b| b.clock);
    let points = points(buckets, clock, run.window, run.ran);
    let mut marks: Vec<Mark> = events
        .iter()
        .filter_map(|ev| {
            let kind = mark_kind(ev)?;
            let t = clock.map_or(0.0, |c| c.offset_s(ev.timestamp()));
            if t > run.ran.as_secs_f64() {
                return None;
            }
            let label = match mark_peer(ev, run.peers) {
                Some(p) => format!("{} {p}", kind.label()),
                None => kind.label(),
            };
            Some(Mark { t, kind, label })
        })
        .collect();
    marks.sort_by(|a, b| a.t.total_cmp(&b.t));

    let x_end = points
        .last()
        .map_or(0.0, |p| p.t + clock.map_or(0.0, |c| c.width_s()) / 2.0)
        .max(run.window.as_secs_f64())
        .max(run.ran.as_secs_f64());
    let y_max = points.iter().map(|p| p.rps.max(p.errors)).fold(0.0, f64::max).max(1.0);
    // Latency on a log scale, so that a p99 spike does not flatten p50.
    let lat_lo = points.iter().filter_map(|p| p.p50).fold(f64::INFINITY, f64::min);
    let lat_hi = points.iter().filter_map(|p| p.p99).fold(0.0, f64::max);
    let (lat_lo, lat_hi) =
        if lat_lo.is_finite() && lat_hi >= lat_lo { ((lat_lo * 0.7).max(1.0), lat_hi * 1.5) } else { (1.0, 1000.0) };
    let any_errors = points.iter().any(|p| p.errors > 0.0);

    let mut title = run.title();
    if dropped > 0 {
        title.push_str(&format!(" ({dropped} events not marked)"));
    }
    let e = |e: DrawingAreaErrorKind<std::io::Error>| e.to_string();

    // The marker labels' rows, laid out on a scratch chart of the same
    // geometry (x does not depend on the y range): the upper panel's y range
    // then leaves the rows used, and the legend, above the series.
    let (layout, y_rps) = {
        let mut scratch = String::new();
        let root = SVGBackend::with_string(&mut scratch, (WIDTH, HEIGHT)).into_drawing_area();
        let body = root.titled(&title, ("sans-serif", 22)).map_err(e)?;
        let (upper, _) = body.split_vertically((HEIGHT - 40) / 2);
        let probe = top_chart(&upper, x_end, 1.0).map_err(e)?;
        let (xs, ys) = probe.plotting_area().get_pixel_range();
        let px: Vec<(i32, usize)> =
            marks.iter().map(|m| (probe.backend_coord(&(m.t, 0.0)).0, m.label.chars().count())).collect();
        let layout = layout_labels((xs.start, xs.end), &px);
        let rows = layout.iter().map(|l| l.row + 1).max().unwrap_or(0).max(LEGEND_ROWS);
        (layout, y_axis_top(y_max, ys.end - ys.start, label_band(rows)))
    };

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let body = root.titled(&title, ("sans-serif", 22)).map_err(e)?;
        let (upper, lower) = body.split_vertically((HEIGHT - 40) / 2);

        let mut top = top_chart(&upper, x_end, y_rps).map_err(e)?;
        top.configure_mesh()
            .y_desc("req/s")
            .y_label_formatter(&|v| compact(*v))
            .x_label_formatter(&|v| format!("{v:.1} s"))
            .draw()
            .map_err(e)?;
        top.draw_series(LineSeries::new(points.iter().map(|p| (p.t, p.rps)), RPS.stroke_width(2)))
            .map_err(e)?
            .label("req/s")
            .legend(|(x, y)| Rectangle::new([(x, y - 4), (x + 16, y + 4)], RPS.filled()));
        if any_errors {
            top.draw_series(LineSeries::new(points.iter().map(|p| (p.t, p.errors)), ERRORS.stroke_width(2)))
                .map_err(e)?
                .label("errors/s")
                .legend(|(x, y)| Rectangle::new([(x, y - 4), (x + 16, y + 4)], ERRORS.filled()));
            // A few errors among many answers are a flat line at zero: each
            // bucket that has any gets a dot.
            top.draw_series(
                points.iter().filter(|p| p.errors > 0.0).map(|p| Circle::new((p.t, p.errors), 4, ERRORS.filled())),
            )
            .map_err(e)?;
        }

        let mut bottom = ChartBuilder::on(&lower)
            .caption("latency of the answers completed in each 100 ms (µs, log scale)", ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..x_end, (lat_lo..lat_hi).log_scale())
            .map_err(e)?;
        bottom
            .configure_mesh()
            .x_desc("seconds since the start")
            .y_desc("µs")
            // A log axis has a light line per minor step: too dense to read;
            // of its 1..9 steps per decade, 1, 2 and 5 are labelled.
            .light_line_style(TRANSPARENT)
            .y_label_formatter(&|v| log_label(*v))
            .x_label_formatter(&|v| format!("{v:.1} s"))
            .draw()
            .map_err(e)?;
        for (name, color, f) in [("p50", P50, (|p: &Point| p.p50) as fn(&Point) -> _), ("p99", P99, |p: &Point| p.p99)]
        {
            for (i, seg) in segments(&points, f).into_iter().enumerate() {
                let drawn = bottom.draw_series(LineSeries::new(seg, color.stroke_width(2))).map_err(e)?;
                if i == 0 {
                    drawn
                        .label(name)
                        .legend(move |(x, y)| Rectangle::new([(x, y - 4), (x + 16, y + 4)], color.filled()));
                }
            }
        }

        // Markers: a line through each panel, the label at the top of the
        // upper one, in the row laid out for it.
        for m in &marks {
            let style = m.kind.color().stroke_width(1);
            top.draw_series(std::iter::once(PathElement::new(vec![(m.t, 0.0), (m.t, y_rps)], style))).map_err(e)?;
            bottom
                .draw_series(std::iter::once(PathElement::new(vec![(m.t, lat_lo), (m.t, lat_hi)], style)))
                .map_err(e)?;
        }
        for (m, l) in marks.iter().zip(&layout) {
            let anchor = if l.left { HPos::Right } else { HPos::Left };
            let style = ("sans-serif", 14).into_font().color(&m.kind.color()).pos(Pos::new(anchor, VPos::Top));
            let (_, ys) = top.plotting_area().get_pixel_range();
            root.draw(&Text::new(m.label.clone(), (l.x, ys.start + 2 + ROW_PX * l.row as i32), style)).map_err(e)?;
        }

        top.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(e)?;
        bottom
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(e)?;
        root.present().map_err(e)?;
    }
    Ok(annotate(&svg, &run.title()))
}

type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// The upper panel (answers per second) on `area`, its y axis up to `y_top`.
fn top_chart<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, Shift>,
    x_end: f64,
    y_top: f64,
) -> Result<Chart<'a, 'b>, DrawingAreaErrorKind<std::io::Error>> {
    ChartBuilder::on(area)
        .caption("answers per second, per 100 ms", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_end, 0f64..y_top)
}

/// Where a marker's label goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LabelPos {
    /// The text's anchor, pixels from the left.
    x: i32,
    /// Right-aligned at `x`, on the left of its line (else left-aligned).
    left: bool,
    /// The row, 0 at the top of the upper panel.
    row: usize,
}

/// The labels' rows: each marker (`px`: its line's pixel x and its label's
/// length in characters, in time order) gets the first row where its label
/// overlaps neither an earlier label nor the legend in the upper right
/// corner (the top [`LEGEND_ROWS`] rows, [`LEGEND_PX`] wide); a label that
/// would run past the right edge goes on the left of its line. With every
/// row taken, the rows are reused in turn.
fn layout_labels(xs: (i32, i32), px: &[(i32, usize)]) -> Vec<LabelPos> {
    let legend_left = xs.1 - 5 - LEGEND_PX;
    // The rows' right ends so far.
    let mut rows = [i32::MIN; LABEL_ROWS];
    px.iter()
        .enumerate()
        .map(|(i, &(px, chars))| {
            // The naive font estimate plotters uses without a font: 0.7 em.
            let w = (chars as f64 * 7.0) as i32 + 6;
            let left_side = px + w > xs.1;
            let (start, end) = if left_side { (px - w, px) } else { (px, px + w) };
            let free = |r: usize| rows[r] < start && (r >= LEGEND_ROWS || end < legend_left);
            let row = (0..LABEL_ROWS).find(|&r| free(r)).unwrap_or(i % LABEL_ROWS);
            rows[row] = rows[row].max(end);
            let x = if left_side { px - 3 } else { px + 3 };
            LabelPos { x, left: left_side, row }
        })
        .collect()
}

/// Pixels at the top of the upper panel taken by `rows` rows of labels.
fn label_band(rows: usize) -> i32 {
    2 + ROW_PX * rows as i32 + 6
}

/// The upper panel's y axis top for series up to `y_max`, in a plotting area
/// `plot_px` high whose top `band_px` pixels are kept for labels and the
/// legend (at least 15 % headroom; the band at most 60 % of the panel).
fn y_axis_top(y_max: f64, plot_px: i32, band_px: i32) -> f64 {
    let plot = f64::from(plot_px.max(1));
    let band = f64::from(band_px.max(0)).min(plot * 0.6);
    (y_max * 1.15).max(y_max * plot / (plot - band))
}

/// Adds a `<title>`, and `class` attributes by colour to the series'
/// polylines and the markers' lines and labels (plotters' SVG has none).
fn annotate(svg: &str, title: &str) -> String {
    let hex = |c: RGBColor| format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2);
    let mut classes: Vec<(String, String)> = vec![
        (hex(RPS), "series series-rps".into()),
        (hex(ERRORS), "series series-errors".into()),
        (hex(P50), "series series-p50".into()),
        (hex(P99), "series series-p99".into()),
    ];
    for k in MarkKind::ALL {
        classes.push((hex(k.color()), format!("marker marker-{}", k.class())));
    }
    let mut out = String::with_capacity(svg.len() + 4096);
    let mut rest = svg;
    let mut titled = false;
    while let Some(pos) = rest.find('<') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        let end = rest.find('>').map_or(rest.len(), |e| e + 1);
        let tag = &rest[..end];
        rest = &rest[end..];
        let name = tag[1..].split([' ', '>', '/']).next().unwrap_or("");
        let color_attr = match name {
            "polyline" => "stroke=\"",
            "text" | "circle" => "fill=\"",
            _ => "",
        };
        let color = (!color_attr.is_empty())
            .then(|| tag.find(color_attr).map(|i| &tag[i + color_attr.len()..]))
            .flatten()
            .and_then(|s| s.get(..7));
        match color.and_then(|c| classes.iter().find(|(h, _)| h == c)) {
            Some((_, class)) => {
                out.push('<');
                out.push_str(name);
                out.push_str(&format!(" class=\"{class}\""));
                if name == "polyline" && class.starts_with("marker") {
                    out.push_str(" stroke-dasharray=\"5 4\"");
                }
                out.push_str(&tag[1 + name.len()..]);
            }
            None => out.push_str(tag),
        }
        if name == "svg" && !titled {
            titled = true;
            out.push_str("\n<title>");
            for c in title.chars() {
                match c {
                    '<' => out.push_str("&lt;"),
                    '>' => out.push_str("&gt;"),
                    '&' => out.push_str("&amp;"),
                    c => out.push(c),
                }
            }
            out.push_str("</title>");
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock() -> Clock {
        Clock::start(Duration::from_secs(2))
    }

    #[test]
    fn buckets_merge_and_reuse_histograms() {
        let c = clock();
        let mut shared = Buckets::new(c);
        let mut local = Buckets::new(c);
        local.record(c.start + Duration::from_millis(50), Some(100));
        local.record(c.start + Duration::from_millis(150), Some(200));
        local.record(c.start + Duration::from_millis(150), None);
        shared.absorb(&mut local);
        assert!(local.slots.is_empty());
        assert_eq!(local.spare.len(), 2);
        local.record(c.start + Duration::from_millis(120), Some(300));
        assert_eq!(local.spare.len(), 1, "a spare histogram is reused");
        shared.absorb(&mut local);
        let idx: Vec<_> = shared.slots.iter().map(|s| (s.index, s.answers, s.errors)).collect();
        assert_eq!(idx, [(0, 1, 0), (1, 2, 1)]);
        let pts = points(Some(&shared), Some(c), Duration::from_secs(2), Duration::from_secs(2));
        assert_eq!(pts.len(), 20);
        assert_eq!(pts[1].rps, 20.0);
        assert_eq!(pts[1].errors, 10.0);
        assert!(pts[2].p50.is_none());
        // A last bucket cut short by the end of the run: rates over what it covers.
        let pts = points(Some(&shared), Some(c), Duration::from_millis(100), Duration::from_millis(125));
        assert_eq!(pts.len(), 2);
        assert!((pts[1].rps - 80.0).abs() < 1e-6, "{}", pts[1].rps);
        assert!((pts[1].t - 0.1125).abs() < 1e-9);
    }

    #[test]
    fn long_runs_get_wider_buckets() {
        assert_eq!(Clock::start(Duration::from_secs(200)).width_us, 100_000);
        assert_eq!(Clock::start(Duration::from_secs(201)).width_us, 200_000);
        assert_eq!(Clock::start(Duration::from_secs(3600)).width_us, 1_800_000);
    }

    #[test]
    fn renders_classes_and_labels() {
        let c = clock();
        let mut b = Buckets::new(c);
        for i in 0..20u64 {
            b.record(c.start + Duration::from_millis(i * 100 + 10), Some(100 + i));
        }
        let peers = vec!["127.0.0.1:3868".to_string()];
        let window = Duration::from_secs(2);
        let run = Run { peers: &peers, inflight: 8, rate: None, window, ran: window };
        let svg = render(&run, Some(&b), &[], 0).unwrap();
        assert!(svg.contains("<title>diam bench → 127.0.0.1:3868 · inflight 8 · 2 s</title>"), "{svg}");
        assert!(svg.contains("<polyline class=\"series series-rps\""), "{svg}");
        assert!(svg.contains("class=\"series series-p99\""), "{svg}");
        assert!(!svg.contains("series-errors"), "no errors, no series");
        for label in ["req/s", "p50", "p99"] {
            assert!(svg.contains(&format!(">\n{label}\n</text>")), "legend {label}: {svg}");
        }
    }

    #[test]
    fn labels_stack_and_keep_clear_of_the_legend() {
        let xs = (80, 1190);
        // Three markers on one line, stacked; one further on, back in row 0.
        let l = layout_labels(xs, &[(300, 20), (300, 20), (300, 20), (600, 20)]);
        assert_eq!(l.iter().map(|p| p.row).collect::<Vec<_>>(), [0, 1, 2, 0]);
        assert!(l.iter().all(|p| !p.left) && l[0].x == 303);
        // Under the legend (the top right corner): below its rows.
        let l = layout_labels(xs, &[(1000, 20)]);
        assert_eq!(l[0].row, LEGEND_ROWS);
        // Past the right edge: on the left of its line, still below the legend.
        let l = layout_labels(xs, &[(1180, 20)]);
        assert_eq!(l[0], LabelPos { x: 1177, left: true, row: LEGEND_ROWS });
        // Clear of the legend: the top row.
        assert_eq!(layout_labels(xs, &[(700, 20)])[0].row, 0);
    }

    #[test]
    fn the_series_stay_below_the_label_band() {
        assert!((y_axis_top(100.0, 300, 0) - 115.0).abs() < 1e-9);
        for rows in [1, LEGEND_ROWS, LABEL_ROWS] {
            let band = label_band(rows);
            let top = y_axis_top(100.0, 300, band);
            // The series' maximum, in pixels from the top of the plotting area.
            let y_px = 300.0 * (1.0 - 100.0 / top);
            assert!(y_px >= f64::from(band) - 1e-9, "{rows} rows: {y_px} px < {band}");
        }
        // A band taller than the panel still leaves the series some room.
        assert!(y_axis_top(100.0, 100, 1000) <= 250.0 + 1e-9);
    }

    #[test]
    fn errors_get_a_dot_per_bucket() {
        let c = clock();
        let mut b = Buckets::new(c);
        for i in 0..20u64 {
            b.record(c.start + Duration::from_millis(i * 100 + 10), Some(100));
        }
        b.record(c.start + Duration::from_millis(1010), None);
        b.record(c.start + Duration::from_millis(1020), None);
        b.record(c.start + Duration::from_millis(1510), None);
        let peers = vec!["127.0.0.1:3868".to_string()];
        let window = Duration::from_secs(2);
        let run = Run { peers: &peers, inflight: 8, rate: None, window, ran: window };
        let svg = render(&run, Some(&b), &[], 0).unwrap();
        assert!(svg.contains("<polyline class=\"series series-errors\""), "{svg}");
        assert_eq!(svg.matches("<circle class=\"series series-errors\"").count(), 2, "{svg}");
    }

    #[test]
    fn annotate_leaves_other_tags_alone() {
        let svg = "<svg a=\"1\">\n<line stroke=\"#1F77B4\"/>\n<text fill=\"#D62728\">\nx &amp; y\n</text>\n</svg>\n";
        let out = annotate(svg, "t<1>");
        assert_eq!(
            out,
            "<svg a=\"1\">\n<title>t&lt;1&gt;</title>\n<line stroke=\"#1F77B4\"/>\n\
             <text class=\"marker marker-disconnected\" fill=\"#D62728\">\nx &amp; y\n</text>\n</svg>\n"
        );
    }
}
