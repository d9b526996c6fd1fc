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
    let height = TOP + ROW * rows as f64 + 60.0;
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
        if c.kind == ComponentKind::Snapshot {
            for t in &c.snapshots {
                let _ = writeln!(
                    s,
                    r##"<rect x="{:.1}" y="{}" width="3" height="18" fill="#2b6cb0"><title>{}: snapshot at {t}</title></rect>"##,
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
    for m in &r.markers {
        let x = axis.x(m.at);
        let fill = if m.restorable { "#2f855a" } else { "#c53030" };
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
        let cy = y + 11.0;
        match m.class {
            Class::Quiesced => {
                let _ = writeln!(
                    s,
                    r#"<rect x="{:.1}" y="{:.1}" width="10" height="10" fill="{fill}"><title>{}</title></rect>"#,
                    x - 5.0,
                    cy - 5.0,
                    esc(&title)
                );
            }
            Class::Correlated => {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{x:.1}" cy="{cy:.1}" r="5" fill="{fill}"><title>{}</title></circle>"#,
                    esc(&title)
                );
            }
            Class::Crash => {
                let _ = writeln!(
                    s,
                    r#"<path d="M {x:.1} {:.1} L {:.1} {:.1} L {:.1} {:.1} Z" fill="{fill}"><title>{}</title></path>"#,
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
        let x = axis.x(a.at);
        let fill = if a.passed { "#2b6cb0" } else { "#c53030" };
        let label = match a.kind {
            ActivityKind::Drill => "drill",
            ActivityKind::Restore => "restore",
        };
        let _ = writeln!(
            s,
            r#"<path d="M {x:.1} {:.1} L {:.1} {:.1} L {x:.1} {:.1} L {:.1} {:.1} Z" fill="{fill}"><title>{label} of {} at {}: {} (plan {})</title></path>"#,
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
    for i in 0..=4 {
        let t = Timestamp::from_micros(axis.from + (axis.to - axis.from) / 4 * i);
        let x = axis.x(t);
        let _ = writeln!(s, r##"<line x1="{x:.1}" y1="{y}" x2="{x:.1}" y2="{}" stroke="#444"/>"##, y + 5.0);
        let anchor = match i {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let _ = writeln!(s, r#"<text x="{x:.1}" y="{}" text-anchor="{anchor}" font-size="10">{t}</text>"#, y + 18.0);
    }
    let _ = writeln!(
        s,
        r#"<text x="10" y="{}" font-size="10">green: restorable · red: not · circle: correlated marker · square: quiesced · triangle: crash · diamond: drill/restore (blue passed, red failed)</text>"#,
        y + 40.0
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
            "<tr><td>{}</td><td>{}</td><td>{:?}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&m.id),
            m.at,
            m.class,
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
    let last_test = match status.last_drill {
        Some((at, true)) => format!("<span class=\"ok\">passed</span> at {at}"),
        Some((at, false)) => format!("<span class=\"bad\">FAILED</span> at {at}"),
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
