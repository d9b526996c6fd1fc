//! The timeline picture: each component's restorable intervals, the gaps,
//! the group's correlated windows, markers (by class and status), drills and
//! restores on one time axis. Pure text out of a [`GroupReport`]: the same
//! report gives the same bytes.

use std::fmt::Write as _;

use tidemark_core::Timestamp;

use crate::group::{ActivityKind, Class, ComponentKind, GroupReport};

const WIDTH: f64 = 1100.0;
const LEFT: f64 = 190.0;
const RIGHT: f64 = 30.0;
const ROW: f64 = 34.0;
const TOP: f64 = 48.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

struct Axis {
    from: i64,
    to: i64,
}

impl Axis {
    fn x(&self, t: Timestamp) -> f64 {
        let span = (self.to - self.from).max(1) as f64;
        LEFT + (t.as_micros().clamp(self.from, self.to) - self.from) as f64 / span * (WIDTH - LEFT - RIGHT)
    }
}

/// Every time the picture shows, to choose the axis.
fn times(r: &GroupReport) -> Vec<Timestamp> {
    let mut out = Vec::new();
    for c in &r.component_windows {
        for (a, b) in &c.intervals {
            out.extend([*a, *b]);
        }
        out.extend(c.snapshots.iter().copied());
    }
    out.extend(r.markers.iter().map(|m| m.at));
    out.extend(r.activities.iter().map(|a| a.at));
    out
}

/// Colours: restorable and tested green, restorable and never tested a
/// green ring, restorable but its newest drill failed orange, not
/// restorable red; snapshots purple; drills blue (passed) or red (failed).
const GREEN: &str = "#2f855a";
const ORANGE: &str = "#dd6b20";
const RED: &str = "#c53030";
const PURPLE: &str = "#6b46c1";
const BLUE: &str = "#2b6cb0";

/// Greens of distinct lightness, one per PostgreSQL timeline.
const TIMELINE_SHADES: [&str; 3] = ["#5aa55a", "#276749", "#68d391"];

/// Rule: a marker's colour says whether it can be restored and whether
/// that was shown — (fill, stroke).
fn marker_colour(m: &crate::group::RecoveryPoint) -> (&'static str, &'static str) {
    match (m.restorable, m.record.last_drill.as_ref().map(|d| d.result == "passed")) {
        (false, _) => (RED, RED),
        (true, Some(false)) => (ORANGE, ORANGE),
        (true, Some(true)) => (GREEN, GREEN),
        (true, None) => ("#ffffff", GREEN),
    }
}

/// Rule: tick labels as short as the span allows — the time of day (with
/// milliseconds under a minute) when the picture spans less than two days,
/// the date and minute otherwise; the first label carries the date.
fn tick_label(t: Timestamp, span_us: i64, first: bool) -> String {
    let text = t.to_string(); // 2026-12-04T22:28:25.999999Z
    let (date, time) = text.split_once('T').unwrap_or((&text, ""));
    let time = time.trim_end_matches('Z');
    let hms = &time[..time.len().min(8)];
    if span_us < 2 * 86_400_000_000 {
        let clock = if span_us < 60_000_000 { &time[..time.len().min(12)] } else { hms };
        if first { format!("{date} {clock}") } else { clock.to_owned() }
    } else {
        format!("{date} {}", &hms[..hms.len().min(5)])
    }
}

/// Rule: marks closer than `min_dx` pixels to the one before are stacked
/// on the next level (up to `levels`), so markers milliseconds apart stay visible.
fn stack_levels(xs: &[f64], min_dx: f64, levels: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(xs.len());
    let mut last_x_at_level: Vec<f64> = vec![f64::NEG_INFINITY; levels.max(1)];
    for &x in xs {
        let level = (0..last_x_at_level.len()).find(|&l| x - last_x_at_level[l] >= min_dx).unwrap_or(0);
        last_x_at_level[level] = x;
        out.push(level);
    }
    out
}

/// Rule: a drill or restore is drawn on the point it tested — its marker's
/// time, or the correlated time it names — not when it ran.
fn tested_at(r: &GroupReport, a: &crate::group::Activity) -> Timestamp {
    r.markers
        .iter()
        .find(|m| m.id == a.recovery_point)
        .map(|m| m.at)
        .or_else(|| Timestamp::parse_rfc3339(&a.recovery_point).ok())
        .unwrap_or(a.at)
}

/// Rule: the SVG document of a group's timeline.
pub fn svg(r: &GroupReport) -> String {
    let ts = times(r);
    let (from, to) = match (ts.iter().min(), ts.iter().max()) {
        (Some(a), Some(b)) => (a.as_micros(), b.as_micros().max(a.as_micros() + 1_000_000)),
        _ => (0, 1_000_000),
    };
    let pad = (to - from) / 40;
    let axis = Axis { from: from - pad, to: to + pad };
    let rows = r.component_windows.len() + 3;
    let height = TOP + ROW * rows as f64 + 74.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
    let _ = writeln!(
        s,
        r#"<text x="10" y="20" font-size="15" font-weight="bold">{} — recovery timeline (max skew {} ms)</text>"#,
        esc(&r.group),
        r.max_skew_ms
    );
    let mut y = TOP;
    // One row per component: restorable intervals green, the rest of the axis red (a gap).
    for c in &r.component_windows {
        let _ = writeln!(s, r#"<text x="10" y="{}">{}</text>"#, y + 15.0, esc(&c.component));
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{}" width="{}" height="18" fill="#f3d3d3"><title>{}: not restorable</title></rect>"##,
            y + 2.0,
            WIDTH - LEFT - RIGHT,
            esc(&c.component)
        );
        if c.timelines.is_empty() {
            for (a, b) in &c.intervals {
                let (x0, x1) = (axis.x(*a), axis.x(*b));
                let _ = writeln!(
                    s,
                    r##"<rect x="{x0:.1}" y="{}" width="{:.1}" height="18" fill="#5aa55a"><title>{}: restorable {a} … {b}</title></rect>"##,
                    y + 2.0,
                    (x1 - x0).max(1.5),
                    esc(&c.component)
                );
            }
        }
        // A cluster with several timelines: each in its own shade, labelled.
        for (i, tl) in c.timelines.iter().enumerate() {
            let fill = TIMELINE_SHADES[i % TIMELINE_SHADES.len()];
            for (a, b) in &tl.intervals {
                let (x0, x1) = (axis.x(*a), axis.x(*b));
                let _ = writeln!(
                    s,
                    r##"<rect x="{x0:.1}" y="{}" width="{:.1}" height="18" fill="{fill}"><title>{}: timeline {}, restorable {a} … {b}</title></rect>"##,
                    y + 2.0,
                    (x1 - x0).max(1.5),
                    esc(&c.component),
                    tl.timeline
                );
                let _ = writeln!(
                    s,
                    r##"<text x="{:.1}" y="{}" font-size="9" fill="#ffffff">tl {}</text>"##,
                    x0 + 2.0,
                    y + 14.0,
                    tl.timeline
                );
            }
        }
        if c.kind == ComponentKind::Snapshot {
            for t in &c.snapshots {
                let _ = writeln!(
                    s,
                    r##"<rect x="{:.1}" y="{}" width="3" height="18" fill="{PURPLE}"><title>{}: snapshot at {t}</title></rect>"##,
                    axis.x(*t) - 1.5,
                    y + 2.0,
                    esc(&c.component)
                );
            }
        }
        y += ROW;
    }
    // The group: correlated windows and gaps.
    let _ = writeln!(s, r#"<text x="10" y="{}" font-weight="bold">{} (correlated)</text>"#, y + 15.0, esc(&r.group));
    for w in &r.windows {
        let (x0, x1) = (axis.x(w.from), axis.x(w.to));
        let _ = writeln!(
            s,
            r##"<rect x="{x0:.1}" y="{}" width="{:.1}" height="18" fill="#2f855a"><title>correlated {} … {}</title></rect>"##,
            y + 2.0,
            (x1 - x0).max(1.5),
            w.from,
            w.to
        );
    }
    for g in &r.gaps {
        let (x0, x1) = (axis.x(g.from), axis.x(g.to));
        let _ = writeln!(
            s,
            r##"<rect x="{x0:.1}" y="{}" width="{:.1}" height="18" fill="#c53030"><title>gap {} … {}: {}</title></rect>"##,
            y + 2.0,
            (x1 - x0).max(1.5),
            g.from,
            g.to,
            esc(&g.reasons.join("; "))
        );
    }
    y += ROW;
    // Markers: shape by class, colour by status.
    let _ = writeln!(s, r#"<text x="10" y="{}">markers</text>"#, y + 15.0);
    // Oldest first, so stacking goes along the axis.
    let mut markers: Vec<&crate::group::RecoveryPoint> = r.markers.iter().collect();
    markers.sort_by_key(|m| (m.at, m.seq));
    let levels = stack_levels(&markers.iter().map(|m| axis.x(m.at)).collect::<Vec<_>>(), 8.0, 3);
    for (m, level) in markers.into_iter().zip(levels) {
        let x = axis.x(m.at);
        let (fill, stroke) = marker_colour(m);
        let reasons: Vec<String> =
            m.components.iter().filter_map(|p| p.reason.as_ref().map(|r| format!("{}: {r}", p.component))).collect();
        let title = format!(
            "{} {} at {} — {}{}{}",
            match m.class {
                Class::Quiesced => "quiesced",
                Class::Correlated => "correlated",
                Class::Crash => "crash",
            },
            m.id,
            m.at,
            m.status,
            if reasons.is_empty() { String::new() } else { format!(": {}", reasons.join("; ")) },
            m.record.last_drill.as_ref().map(|d| format!("; last drill {}", d.result)).unwrap_or_default()
        );
        let cy = y + 6.0 + 8.0 * level as f64;
        match m.class {
            Class::Quiesced => {
                let _ = writeln!(
                    s,
                    r#"<rect x="{:.1}" y="{:.1}" width="10" height="10" fill="{fill}" stroke="{stroke}" stroke-width="1.5"><title>{}</title></rect>"#,
                    x - 5.0,
                    cy - 5.0,
                    esc(&title)
                );
            }
            Class::Correlated => {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{x:.1}" cy="{cy:.1}" r="4.5" fill="{fill}" stroke="{stroke}" stroke-width="1.5"><title>{}</title></circle>"#,
                    esc(&title)
                );
            }
            Class::Crash => {
                let _ = writeln!(
                    s,
                    r#"<path d="M {x:.1} {:.1} L {:.1} {:.1} L {:.1} {:.1} Z" fill="{fill}" stroke="{stroke}" stroke-width="1.5"><title>{}</title></path>"#,
                    cy - 6.0,
                    x + 6.0,
                    cy + 5.0,
                    x - 6.0,
                    cy + 5.0,
                    esc(&title)
                );
            }
        }
    }
    y += ROW;
    // Drills and restores.
    let _ = writeln!(s, r#"<text x="10" y="{}">drills / restores</text>"#, y + 15.0);
    for a in &r.activities {
        let x = axis.x(tested_at(r, a));
        let fill = if a.passed { BLUE } else { RED };
        let label = match a.kind {
            ActivityKind::Drill => "drill",
            ActivityKind::Restore => "restore",
        };
        let _ = writeln!(
            s,
            r#"<path d="M {x:.1} {:.1} L {:.1} {:.1} L {x:.1} {:.1} L {:.1} {:.1} Z" fill="{fill}" fill-opacity="0.8"><title>{label} of {}, run at {}: {} (plan {})</title></path>"#,
            y + 4.0,
            x + 6.0,
            y + 11.0,
            y + 18.0,
            x - 6.0,
            y + 11.0,
            esc(&a.recovery_point),
            a.at,
            a.result,
            a.plan_digest
        );
    }
    y += ROW;
    // The axis with its ends and a few ticks.
    let _ = writeln!(s, r##"<line x1="{LEFT}" y1="{y}" x2="{}" y2="{y}" stroke="#444"/>"##, WIDTH - RIGHT);
    let span = axis.to - axis.from;
    for i in 0..=4 {
        let t = Timestamp::from_micros(axis.from + (axis.to - axis.from) / 4 * i);
        let x = axis.x(t);
        let _ = writeln!(s, r##"<line x1="{x:.1}" y1="{y}" x2="{x:.1}" y2="{}" stroke="#444"/>"##, y + 5.0);
        let anchor = match i {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let label = tick_label(t, span, i == 0);
        let _ =
            writeln!(s, r#"<text x="{x:.1}" y="{}" text-anchor="{anchor}" font-size="10">{label}</text>"#, y + 18.0);
    }
    let _ = writeln!(
        s,
        r#"<text x="10" y="{}" font-size="10">markers — green: restorable and tested · green ring: restorable, never tested · orange: newest drill failed · red: not restorable; circle: correlated · square: quiesced · triangle: crash</text>"#,
        y + 40.0
    );
    let _ = writeln!(
        s,
        r#"<text x="10" y="{}" font-size="10">purple: snapshots · diamonds: drills and restores, on the point they tested (blue passed, red failed) · times UTC</text>"#,
        y + 54.0
    );
    s.push_str("</svg>\n");
    s
}

/// The same picture as a self-contained HTML page (what the HTTP API serves).
pub fn html(r: &GroupReport) -> String {
    let mut rows = String::new();
    for m in r.markers.iter().take(50) {
        let reasons: Vec<String> =
            m.components.iter().filter_map(|p| p.reason.as_ref().map(|x| format!("{}: {x}", p.component))).collect();
        let _ = writeln!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&m.id),
            m.at,
            m.class.name(),
            m.status,
            m.record.last_drill.as_ref().map(|d| esc(&d.result)).unwrap_or_else(|| "never".into()),
            esc(&reasons.join("; "))
        );
    }
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{g} — tidemark timeline</title>\n<style>body{{font-family:sans-serif;margin:20px}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 6px;font-size:12px}}</style></head>\n<body>\n{svg}<h3>Newest markers</h3>\n<table><tr><th>marker</th><th>at</th><th>class</th><th>status</th><th>last drill</th><th>reasons</th></tr>\n{rows}</table>\n</body></html>\n",
        g = esc(&r.group),
        svg = svg(r),
    )
}

/// How a duration reads on a page: `42 s`, `17 min`, `3.2 h`, `4.0 d`.
fn age(seconds: f64) -> String {
    match seconds {
        s if s.is_infinite() => "unbounded (nothing is restorable)".to_owned(),
        s if s < 120.0 => format!("{s:.0} s"),
        s if s < 7200.0 => format!("{:.0} min", s / 60.0),
        s if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.1} d", s / 86_400.0),
    }
}

/// The group overview a person opens: the live RPO, the recovery window,
/// the newest restore test, every recovery point with its class and
/// restore tests, and every problem with its reason. Plain HTML, no script,
/// nothing fetched from elsewhere.
pub fn overview_html(r: &GroupReport, status: &crate::status::GroupStatus, now: Timestamp) -> String {
    let rpo = crate::status::rpo_seconds(now, status.newest_restorable);
    let window = match (r.windows.iter().map(|w| w.from).min(), status.newest_restorable) {
        (Some(from), Some(to)) => format!("{from} … {to}"),
        (None, Some(to)) => format!("markers only; newest {to}"),
        _ => "none".to_owned(),
    };
    let took =
        status.last_drill_duration_ms.map(|ms| format!(", took {}", age(ms as f64 / 1000.0))).unwrap_or_default();
    let last_test = match status.last_drill {
        Some((at, true)) => format!("<span class=\"ok\">passed</span> at {at}{took}"),
        Some((at, false)) => format!("<span class=\"bad\">FAILED</span> at {at}{took}"),
        None => "<span class=\"bad\">never tested</span>".to_owned(),
    };
    let mut points = String::new();
    for m in r.markers.iter().take(200) {
        let reasons: Vec<String> =
            m.components.iter().filter_map(|p| p.reason.as_ref().map(|x| format!("{}: {x}", p.component))).collect();
        let tested = match &m.record.last_drill {
            Some(d) => {
                format!("{} of {} passed; last {} at {}", m.record.drills_passed, m.record.drills, esc(&d.result), d.at)
            }
            None => "never".to_owned(),
        };
        let state = if m.restorable { "ok" } else { "bad" };
        let _ = writeln!(
            points,
            "<tr class=\"{state}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{tested}</td><td>{}</td></tr>",
            esc(&m.id),
            m.at,
            m.class.name(),
            if m.restorable { "restorable" } else { "NOT restorable" },
            esc(&reasons.join("; "))
        );
    }
    let mut problems = String::new();
    for g in &r.gaps {
        let _ = writeln!(problems, "<li>gap {} … {}: {}</li>", g.from, g.to, esc(&g.reasons.join("; ")));
    }
    for n in &r.notes {
        let _ = writeln!(problems, "<li>{}</li>", esc(n));
    }
    let bad = r.markers.iter().filter(|m| !m.restorable).count();
    if bad > 0 {
        let _ = writeln!(problems, "<li>{bad} markers are not restorable (reasons in the table)</li>");
    }
    if problems.is_empty() {
        problems = "<li>none</li>".to_owned();
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{g} — tidemark</title>\n\
<style>body{{font-family:sans-serif;margin:24px;color:#222}}dt{{font-weight:bold;margin-top:8px}}\
table{{border-collapse:collapse;margin-top:8px}}td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}}\
.ok{{color:#17663a}}.bad{{color:#a31515}}tr.bad td{{background:#fdecec}}form{{display:inline}}</style></head>\n\
<body>\n<h1 id=\"group\">{g}</h1>\n<p><a href=\"/ui/groups/{g}/timeline\">timeline</a> · <a href=\"/ui/\">all groups</a> · \
<form method=\"post\" action=\"/ui/logout\"><button type=\"submit\">log out</button></form></p>\n<dl>\n\
<dt>Live RPO (age of the newest restorable point)</dt><dd id=\"rpo\">{rpo}</dd>\n\
<dt>Recovery window</dt><dd id=\"window\">{window}</dd>\n\
<dt>Newest restore test</dt><dd id=\"last-test\">{last_test} ({passed} passed, {failed} failed in all)</dd>\n\
<dt>Components</dt><dd>{components} (max skew {skew} ms)</dd>\n</dl>\n\
<h2>Problems</h2>\n<ul id=\"problems\">\n{problems}</ul>\n\
<h2>Recovery points (newest first)</h2>\n<table id=\"points\"><tr><th>marker</th><th>at</th><th>class</th><th>status</th><th>restore tests</th><th>reasons</th></tr>\n{points}</table>\n\
<p>As of {now}; every figure is computed from the ledger.</p>\n</body></html>\n",
        g = esc(&r.group),
        rpo = age(rpo),
        passed = status.drills_passed,
        failed = status.drills_failed,
        components = esc(&r.components.join(", ")),
        skew = r.max_skew_ms,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::{ActivityRef, Class, Record, RecoveryPoint};

    fn point(restorable: bool, last: Option<&str>) -> RecoveryPoint {
        let t = Timestamp::from_unix_seconds(1_790_000_000);
        RecoveryPoint {
            id: "m".into(),
            class: Class::Correlated,
            at: t,
            writers_stopped: None,
            restorable,
            status: String::new(),
            components: vec![],
            record: Record {
                last_drill: last.map(|r| ActivityRef {
                    result: r.into(),
                    at: t,
                    plan_digest: tidemark_core::Digest32([0; 32]),
                    seq: 1,
                }),
                ..Record::default()
            },
            seq: 1,
        }
    }

    #[test]
    fn rule_a_marker_whose_drill_failed_is_not_drawn_as_proven() {
        assert_eq!(marker_colour(&point(true, Some("passed"))), (GREEN, GREEN));
        assert_eq!(marker_colour(&point(true, Some("failed"))).0, ORANGE);
        assert_eq!(marker_colour(&point(true, None)), ("#ffffff", GREEN), "untested: a ring");
        assert_eq!(marker_colour(&point(false, Some("passed"))).0, RED);
        assert_ne!(PURPLE, BLUE, "snapshots and passed drills are told apart");
    }

    #[test]
    fn rule_tick_labels_are_as_short_as_the_span_allows() {
        let t = Timestamp::parse_rfc3339("2026-12-04T22:28:25.123456Z").unwrap();
        assert_eq!(tick_label(t, 30_000_000, false), "22:28:25.123");
        assert_eq!(tick_label(t, 3_600_000_000, true), "2026-12-04 22:28:25");
        assert_eq!(tick_label(t, 3_600_000_000, false), "22:28:25");
        assert_eq!(tick_label(t, 30 * 86_400_000_000, false), "2026-12-04 22:28");
    }

    #[test]
    fn rule_a_clusters_timelines_are_told_apart() {
        use crate::group::{ComponentWindows, TimelineIntervals};
        let t = |s: i64| Timestamp::from_unix_seconds(1_790_000_000 + s);
        let report = GroupReport {
            group: "app".into(),
            components: vec!["pg:main".into()],
            max_skew_ms: 1000,
            markers: vec![],
            windows: vec![],
            gaps: vec![],
            component_windows: vec![ComponentWindows {
                component: "pg:main".into(),
                kind: ComponentKind::Postgresql,
                intervals: vec![(t(0), t(100))],
                snapshots: vec![],
                note: None,
                timelines: vec![
                    TimelineIntervals { timeline: 1, intervals: vec![(t(0), t(40))] },
                    TimelineIntervals { timeline: 2, intervals: vec![(t(40), t(100))] },
                ],
            }],
            notes: vec![],
            activities: vec![],
        };
        let picture = svg(&report);
        assert!(picture.contains(">tl 1</text>") && picture.contains(">tl 2</text>"), "{picture}");
        assert!(picture.contains(TIMELINE_SHADES[0]) && picture.contains(TIMELINE_SHADES[1]));
    }

    #[test]
    fn rule_marks_too_close_are_stacked() {
        assert_eq!(stack_levels(&[10.0, 11.0, 12.0, 100.0, 101.0], 8.0, 3), vec![0, 1, 2, 0, 1]);
        assert_eq!(stack_levels(&[10.0, 10.5, 11.0, 11.5], 8.0, 3)[3], 0, "beyond the levels: back to the first");
    }
}
