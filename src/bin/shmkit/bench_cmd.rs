//! `shmkit bench`: runs [`shmkit::bench::suite`] with a progress bar and prints the tables,
//! JSON lines or a plot.

use std::io::{ErrorKind, IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use shmkit::bench::machine::{busy_warning, CpuClock, Machine, MIN_WINDOW};
use shmkit::bench::suite::{self, Better, Event, GroupResult, Options, Outcome};

/// Arguments of `shmkit bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// A shorter run (well under 30 s): smaller workloads, 3 runs each (idle_cpu: one).
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
    /// Runs per figure, 1 to 1000 (the median is reported) [default: 3 with --quick, else 5].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1000))]
    runs: Option<u16>,
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
        g.info.unit,
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

/// The last lines: in each group, shmkit's row doing the same job as the reference and as
/// Python's (`GroupInfo::headline`), and how many times better it is than each.
fn headline(results: &[GroupResult]) -> String {
    let mut out = String::from(
        "Headline: each group's shmkit row against the reference and Python doing the same job\n",
    );
    for g in results {
        let name = g.info.headline;
        let Some(v) = g.figure(name) else {
            out += &format!("  {:<22} {name}: not measured\n", g.info.group);
            continue;
        };
        let vs = |other: Option<(&str, f64)>| match other {
            Some((o, ov)) => g.times_better(v, ov).map_or(String::new(), |q| format!("{q:>8.2}x {o}")),
            None => String::new(),
        };
        let reference = vs(g.reference());
        let python = g.info.python.filter(|p| Some(*p) != g.reference().map(|r| r.0));
        let python = vs(python.and_then(|p| g.figure(p).map(|f| (p, f))));
        let line = format!(
            "  {:<22} {:<20} {:>9} {:<20} {reference:<28} {python}",
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

/// A line on stderr; a closed stderr is not an error worth stopping for.
macro_rules! note {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Runs `shmkit bench`.
pub fn run(args: &BenchArgs) -> Result<(), String> {
    if args.list {
        for g in suite::infos() {
            println!("{:<22} {} [{}, {}]", g.group, g.what, g.unit, better_word(g.better));
        }
        return Ok(());
    }
    let opts = Options { quick: args.quick, runs: args.runs.map(usize::from), groups: args.groups.clone() };
    let plan = suite::plan(&opts)?;
    if let Some(path) = &args.plot {
        // Fail now, not after the whole run, if the plot cannot be written; an existing file
        // is left as it is until the new plot replaces it.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| format!("plot {}: {e}", path.display()))?;
    }
    let machine = Machine::probe();
    let date = shmkit::util::time::utc_now();
    let runs = opts.runs.unwrap_or(if args.quick { 3 } else { 5 });
    note!(
        "shmkit bench {} ({}), {date}, {runs} run{} per figure (the median is shown)",
        env!("CARGO_PKG_VERSION"),
        if args.quick { "quick" } else { "full" },
        if runs == 1 { "" } else { "s" }
    );
    note!("machine: {}", machine.summary());
    if plan.uses_python() {
        match shmkit::bench::python_version() {
            Ok(v) => note!("python3: {v} (its multiprocessing is a peer)"),
            Err(why) => note!("python3: {why} (its rows are skipped)"),
        }
    }
    if let Some(w) = busy_warning(&machine, None) {
        note!("warning: {w}");
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
            ControlFlow::Continue(())
        }
        Event::GroupDone(g) => {
            let text = if json { g.json_lines() } else { table(g) + "\n" };
            bar.suspend(|| {
                let mut out = out.lock();
                out.write_all(text.as_bytes()).and_then(|()| out.flush())
            })
            .map_err(|e| write_err = Some(e))
            // Nobody reads the results any more: stop.
            .map_or(ControlFlow::Break(()), ControlFlow::Continue)
        }
    });
    bar.finish_and_clear();
    match write_err {
        // `shmkit bench | head`: the reader has what it wanted.
        Some(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(()),
        Some(e) => return Err(format!("writing the results: {e}")),
        None => {}
    }
    if !json {
        let mut out = out.lock();
        let _ = write!(out, "{}", headline(&results));
        let _ =
            writeln!(out, "  (* = shmkit; every figure is the median of its runs; {})", machine.summary());
    }

    let others = match (start, CpuClock::now().ok()) {
        (Some(a), Some(b)) => b.others_since(&a),
        _ => None,
    };
    match &others {
        Some(o) => note!(
            "other work during the run: {:.1}% of the CPUs, hypervisor steal {:.1}%, over {:.1} s",
            o.busy * 100.0,
            o.steal * 100.0,
            o.wall.as_secs_f64()
        ),
        None => note!(
            "other work during the run: not measured (a run under {} s is too short to tell)",
            MIN_WINDOW.as_secs()
        ),
    }
    if let Some(w) = busy_warning(&machine, others.as_ref()) {
        note!("warning: {w}");
    }
    if let Some(path) = &args.plot {
        let title = format!("shmkit bench, {date}: {}", machine.summary());
        crate::plot::draw(path, &title, &results).map_err(|e| format!("plot {}: {e}", path.display()))?;
        note!("plot written to {}", path.display());
    }
    // A peer that fails here is reported (its row says FAILED) but only shmkit's own rows
    // decide the exit status: a broken peer is the machine's problem, not shmkit's.
    let mut failures = Vec::new();
    for g in &results {
        for (name, e) in g.failures() {
            if name.starts_with("shmkit") {
                failures.push(format!("{}/{name}: {e}", g.info.group));
            } else {
                note!("warning: peer {}/{name} failed: {e}", g.info.group);
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{} shmkit figure(s) failed: {}", failures.len(), failures.join("; ")))
    }
}
