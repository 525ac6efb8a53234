//! `shmkit bench`: runs [`shmkit::bench::suite`] with a progress bar and prints the tables,
//! JSON lines or a plot.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use shmkit::bench::machine::{busy_warning, CpuClock, Machine};
use shmkit::bench::suite::{self, Better, Event, GroupResult, Options, Outcome};

/// Arguments of `shmkit bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// A shorter run (well under 30 s): smaller workloads, 3 runs each.
    #[arg(long)]
    quick: bool,
    /// Writes one JSON object per measured figure to stdout instead of the tables:
    /// {"group", "impl", "value", "unit", "ratio_to", "ratio"}; the machine facts,
    /// warnings and progress go to stderr.
    #[arg(long)]
    json: bool,
    /// Also draws every group as a bar chart into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Runs per figure (the median is reported) [default: 3 with --quick, else 5].
    #[arg(long)]
    runs: Option<usize>,
    /// Only these groups (comma-separated); `--list` names them.
    #[arg(long, value_delimiter = ',')]
    groups: Option<Vec<String>>,
    /// Lists the groups and exits.
    #[arg(long)]
    list: bool,
}

/// A figure with as many decimals as make sense for its size.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// `better` as the words a table header uses.
pub fn better_word(b: Better) -> &'static str {
    match b {
        Better::Higher => "higher is better",
        Better::Lower => "lower is better",
    }
}

/// One group as a table.
fn table(g: &GroupResult) -> String {
    let reference = g.reference().map_or("reference", |(name, _)| name);
    let mut out = format!("{}: {}\n", g.info.group, g.info.what);
    out += &format!(
        "  {:<24} {:>20} {:>23} {:>20}\n",
        "impl",
        format!("{}", g.info.unit),
        "range of runs",
        format!("vs {reference}")
    );
    for row in &g.rows {
        let mark = if row.is_shmkit() { '*' } else { ' ' };
        match &row.outcome {
            Outcome::Measured { median, min, max, runs } => {
                let ratio = g.ratio(*median).map_or("-".to_owned(), |q| format!("{q:.2}x"));
                let range =
                    if *runs > 1 { format!("{} – {}", num(*min), num(*max)) } else { "(1 run)".to_owned() };
                out += &format!("{mark} {:<24} {:>20} {range:>23} {ratio:>20}\n", row.name, num(*median));
            }
            Outcome::Skipped(why) => out += &format!("{mark} {:<24} skipped: {why}\n", row.name),
            Outcome::Failed(e) => out += &format!("{mark} {:<24} FAILED: {e}\n", row.name),
        }
    }
    out += &format!("  ({}; vs: times better than the reference)\n", better_word(g.info.better));
    out
}

/// The last lines: shmkit's best figure in each group against the group's reference and
/// against Python's best, when Python ran.
fn headline(results: &[GroupResult]) -> String {
    let mut out =
        String::from("Headline: shmkit's best figure in each group, against the reference and Python\n");
    for g in results {
        let Some((name, v)) = g.best("shmkit") else {
            out += &format!("  {:<22} (no shmkit figure)\n", g.info.group);
            continue;
        };
        let vs = |other: Option<(&str, f64)>| match other {
            Some((o, ov)) => g.times_better(v, ov).map_or(String::new(), |q| format!("{q:>8.2}x {o}")),
            None => String::new(),
        };
        let reference = vs(g.reference());
        let python = vs(g.best("python").filter(|p| Some(p.0) != g.reference().map(|r| r.0)));
        let line = format!(
            "  {:<22} {:<22} {:>9} {:<20} {reference:<28} {python}",
            g.info.group,
            name,
            num(v),
            g.info.unit
        );
        out += line.trim_end();
        out.push('\n');
    }
    out
}

/// Runs `shmkit bench`.
pub fn run(args: &BenchArgs) -> Result<(), String> {
    if args.list {
        let plan = suite::plan(&Options::default())?;
        for g in plan.groups() {
            println!("{:<22} {} [{}, {}]", g.group, g.what, g.unit, better_word(g.better));
        }
        return Ok(());
    }
    let opts = Options { quick: args.quick, runs: args.runs, groups: args.groups.clone() };
    let plan = suite::plan(&opts)?;
    if let Some(path) = &args.plot {
        // Fail now, not after the whole run, if the plot cannot be written.
        std::fs::File::create(path).map_err(|e| format!("plot {}: {e}", path.display()))?;
    }
    let machine = Machine::probe();
    let date = utc_now();
    let runs = opts.runs.unwrap_or(if args.quick { 3 } else { 5 });
    eprintln!(
        "shmkit bench {} ({}), {date}, {runs} run{} per figure (the median is shown)",
        env!("CARGO_PKG_VERSION"),
        if args.quick { "quick" } else { "full" },
        if runs == 1 { "" } else { "s" }
    );
    eprintln!("machine: {}", machine.summary());
    match shmkit::bench::python_version() {
        Ok(v) => eprintln!("python3: {v} (its multiprocessing is a peer)"),
        Err(why) => eprintln!("python3: {why} (its rows are skipped)"),
    }
    if let Some(w) = busy_warning(&machine, None) {
        eprintln!("warning: {w}");
    }
    let start = CpuClock::now().ok();

    let bar = ProgressBar::new(plan.steps());
    // Drawn on stderr when it is a terminal, never into a pipe or file.
    bar.set_draw_target(if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    if let Ok(style) = ProgressStyle::with_template("{bar:24} {pos:>3}/{len} {elapsed:>4} {wide_msg}") {
        bar.set_style(style);
    }
    let json = args.json;
    // Not locked across the run: the workloads fork, and a child must not inherit a held lock.
    let out = std::io::stdout();
    let mut write_err = None;
    let results = plan.run(|e| match e {
        Event::Step { group, imp, run, runs } => {
            bar.set_message(format!("{group}/{imp} (run {run}/{runs})"));
            bar.inc(1);
        }
        Event::GroupDone(g) => {
            let text = if json { g.json_lines() } else { table(g) + "\n" };
            bar.suspend(|| {
                let mut out = out.lock();
                if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                    write_err.get_or_insert(e);
                }
            });
        }
    });
    bar.finish_and_clear();
    if let Some(e) = write_err {
        return Err(format!("writing the results: {e}"));
    }
    if !json {
        let mut out = out.lock();
        let _ = write!(out, "{}", headline(&results));
        let _ =
            writeln!(out, "  (* = shmkit; every figure is the median of its runs; {})", machine.summary());
    }

    let others = match (start, CpuClock::now().ok()) {
        (Some(a), Some(b)) => Some(b.others_since(&a)),
        _ => None,
    };
    if let Some(o) = &others {
        eprintln!(
            "other work during the run: {:.1}% of the CPUs, steal {:.1}%, {:.1} s",
            o.busy * 100.0,
            o.steal * 100.0,
            o.wall.as_secs_f64()
        );
    }
    if let Some(w) = busy_warning(&machine, others.as_ref()) {
        eprintln!("warning: {w}");
    }
    if let Some(path) = &args.plot {
        let title = format!("shmkit bench, {date}: {}", machine.summary());
        crate::plot::draw(path, &title, &results).map_err(|e| format!("plot {}: {e}", path.display()))?;
        eprintln!("plot written to {}", path.display());
    }
    let failures: Vec<String> = results
        .iter()
        .flat_map(|g| g.failures().into_iter().map(move |(name, e)| format!("{}/{name}: {e}", g.info.group)))
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{} figure(s) failed: {}", failures.len(), failures.join("; ")))
    }
}

/// Now as `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // SAFETY: `tm` is plain data that gmtime_r fills in from a valid time_t.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let t = secs as libc::time_t;
    // SAFETY: both pointers are to live locals.
    if unsafe { libc::gmtime_r(&t, &mut tm) }.is_null() {
        return format!("{secs} s after the epoch");
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min
    )
}
