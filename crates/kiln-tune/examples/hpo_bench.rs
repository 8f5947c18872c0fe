//! kiln-tune against Optuna on cheap synthetic objectives (see `bench/hpo/README.md`).
//!
//! Part 1 runs kiln's Bayesian and Random strategies on Branin, Hartmann6, Levy-4 and
//! Rosenbrock-4 (the bounds and optima of `shared/bench/hpo/hpo_bench.py`), sequentially and with
//! 4 trials in flight, and prints log10 simple regret beside Optuna's TPE and random search,
//! which it runs in the same job by calling that script.
//! Part 2 runs kiln's Hyperband on `mf_bench.py`'s synthetic learning curves and compares the
//! epochs it needs with random search's.
//!
//! Usage: hpo_bench [--trials N] [--seeds S] [--threads T] [--script PATH] [--no-python]
//!                  [--only PROBLEM] [--skip-mf] [--skip-hpo]

use std::collections::BTreeMap;
use std::f64::consts::PI;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use kiln_tune::{
    Assignment, BayesianConfig, Direction, HyperbandConfig, Param, Scaling, SearchSpace, StrategyConfig, Trial,
    TrialState, hyperband_should_stop, random_assignment, suggest,
};

// ---------------------------------------------------------------- objectives

fn branin(x: &[f64]) -> f64 {
    let (x1, x2) = (x[0], x[1]);
    let (a, b, c) = (1.0, 5.1 / (4.0 * PI * PI), 5.0 / PI);
    let (r, s, t) = (6.0, 10.0, 1.0 / (8.0 * PI));
    a * (x2 - b * x1 * x1 + c * x1 - r).powi(2) + s * (1.0 - t) * x1.cos() + s
}

const H6_A: [[f64; 6]; 4] = [
    [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
    [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
    [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
    [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
];
const H6_P: [[f64; 6]; 4] = [
    [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
    [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
    [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
    [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
];
const H6_ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];

fn hartmann6(x: &[f64]) -> f64 {
    -(0..4)
        .map(|i| {
            let e: f64 = (0..6).map(|j| H6_A[i][j] * (x[j] - H6_P[i][j]).powi(2)).sum();
            H6_ALPHA[i] * (-e).exp()
        })
        .sum::<f64>()
}

fn levy(x: &[f64]) -> f64 {
    let w: Vec<f64> = x.iter().map(|v| 1.0 + (v - 1.0) / 4.0).collect();
    let d = w.len();
    let t1 = (PI * w[0]).sin().powi(2);
    let t2: f64 = w[..d - 1]
        .iter()
        .map(|wi| (wi - 1.0).powi(2) * (1.0 + 10.0 * (PI * wi + 1.0).sin().powi(2)))
        .sum();
    let t3 = (w[d - 1] - 1.0).powi(2) * (1.0 + (2.0 * PI * w[d - 1]).sin().powi(2));
    t1 + t2 + t3
}

fn rosenbrock(x: &[f64]) -> f64 {
    x.windows(2)
        .map(|p| 100.0 * (p[1] - p[0] * p[0]).powi(2) + (1.0 - p[0]).powi(2))
        .sum()
}

struct Problem {
    name: &'static str,
    f: fn(&[f64]) -> f64,
    bounds: Vec<(f64, f64)>,
    fopt: f64,
}

fn problems() -> Vec<Problem> {
    vec![
        Problem {
            name: "branin2",
            f: branin,
            bounds: vec![(-5.0, 10.0), (0.0, 15.0)],
            fopt: 0.397887,
        },
        Problem {
            name: "hartmann6",
            f: hartmann6,
            bounds: vec![(0.0, 1.0); 6],
            fopt: -3.32237,
        },
        Problem {
            name: "levy4",
            f: levy,
            bounds: vec![(-10.0, 10.0); 4],
            fopt: 0.0,
        },
        Problem {
            name: "rosenbrock4",
            f: rosenbrock,
            bounds: vec![(-5.0, 10.0); 4],
            fopt: 0.0,
        },
    ]
}

fn space_of(bounds: &[(f64, f64)]) -> SearchSpace {
    SearchSpace::new(
        bounds
            .iter()
            .enumerate()
            .map(|(i, &(lo, hi))| Param::continuous(format!("x{i}"), lo, hi, Scaling::Linear))
            .collect(),
    )
}

fn point(a: &Assignment, d: usize) -> Vec<f64> {
    (0..d)
        .map(|i| a.get(&format!("x{i}")).and_then(|s| s.parse().ok()).unwrap_or(f64::NAN))
        .collect()
}

// ---------------------------------------------------------------- part 1: kiln vs Optuna

/// Best-so-far objective after each completed trial, and seconds spent in `suggest`.
fn run_kiln(strategy: &StrategyConfig, p: &Problem, seed: u64, n_trials: usize, in_flight: usize) -> (Vec<f64>, f64) {
    let space = space_of(&p.bounds);
    let d = p.bounds.len();
    let mut history: Vec<Trial> = Vec::new();
    let mut trace = Vec::with_capacity(n_trials);
    let mut best = f64::INFINITY;
    let mut secs = 0.0;
    let mut next_to_finish = 0;
    while trace.len() < n_trials {
        // Keep `in_flight` trials running, then finish the oldest one.
        while history.len() < n_trials && history.len() - next_to_finish < in_flight {
            let t0 = Instant::now();
            let a = suggest(strategy, &space, &history, Direction::Minimize, seed, history.len())
                .expect("benchmark spaces are valid");
            secs += t0.elapsed().as_secs_f64();
            history.push(Trial::running(a));
        }
        let t = &mut history[next_to_finish];
        let y = (p.f)(&point(&t.assignment, d));
        t.state = TrialState::Completed { objective: y };
        t.finish_seq = Some(next_to_finish as u64);
        next_to_finish += 1;
        best = best.min(y);
        trace.push(best);
    }
    (trace, secs)
}

#[derive(Clone, Copy)]
struct Cell {
    mean: f64,
    se: f64,
}

fn summarise(values: &[f64]) -> Cell {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    Cell {
        mean,
        se: (var / n).sqrt(),
    }
}

/// Parses `hpo_bench.py` output: `problem sampler mean±se ... secs`.
fn parse_python(out: &str) -> BTreeMap<(String, String), Vec<Cell>> {
    let mut rows = BTreeMap::new();
    for line in out.lines() {
        let toks: Vec<&str> = line.split_whitespace().collect();
        if toks.len() < 3 || toks[0] == "problem" {
            continue;
        }
        let cells: Vec<Cell> = toks[2..]
            .iter()
            .filter_map(|t| {
                let (m, s) = t.split_once('±')?;
                Some(Cell {
                    mean: m.parse().ok()?,
                    se: s.parse().ok()?,
                })
            })
            .collect();
        if !cells.is_empty() {
            rows.insert((toks[0].to_string(), toks[1].to_string()), cells);
        }
    }
    rows
}

fn fmt(c: Option<Cell>) -> String {
    match c {
        Some(c) => format!("{:6.2} ± {:4.2}", c.mean, c.se),
        None => format!("{:>13}", "n/a"),
    }
}

fn parallel_map<T: Send, R: Send>(items: Vec<T>, threads: usize, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let n = items.len();
    let queue = Mutex::new(items.into_iter().enumerate().collect::<Vec<_>>());
    let results = Mutex::new((0..n).map(|_| None).collect::<Vec<Option<R>>>());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    let job = queue.lock().ok().and_then(|mut q| q.pop());
                    let Some((i, item)) = job else { break };
                    let r = f(item);
                    if let Ok(mut res) = results.lock() {
                        res[i] = Some(r);
                    }
                }
            });
        }
    });
    results.into_inner().unwrap_or_default().into_iter().flatten().collect()
}

fn hpo_part(args: &Args) {
    let python = if args.no_python {
        None
    } else {
        let script = args.script.clone();
        let (trials, seeds) = (args.trials, args.seeds);
        Some(std::thread::spawn(move || {
            let dir = std::env::temp_dir().join("kiln-hpo-bench");
            std::fs::create_dir_all(&dir).ok()?;
            let out = Command::new("python3")
                .arg(&script)
                .arg(trials.to_string())
                .arg(seeds.to_string())
                .current_dir(&dir)
                .output()
                .ok()?;
            if !out.status.success() {
                eprintln!("python baseline failed: {}", String::from_utf8_lossy(&out.stderr));
                return None;
            }
            Some(String::from_utf8_lossy(&out.stdout).into_owned())
        }))
    };

    let bayes = StrategyConfig::Bayesian(BayesianConfig::default());
    let variants: Vec<(&str, StrategyConfig, usize)> = vec![
        ("kiln-bayes", bayes.clone(), 1),
        ("kiln-bayes-q4", bayes, 4),
        ("kiln-random", StrategyConfig::Random, 1),
    ];
    let n = args.trials;
    let checkpoints: Vec<usize> = [25, 50, 100]
        .into_iter()
        .filter(|&c| c <= n)
        .chain((n != 100 && n > 0).then_some(n))
        .collect();
    let mut kiln: BTreeMap<(String, String), Vec<Cell>> = BTreeMap::new();
    let mut timing = Vec::new();
    for p in problems() {
        if args.only.as_ref().is_some_and(|o| o != p.name) {
            continue;
        }
        for (name, strat, q) in &variants {
            let t0 = Instant::now();
            let runs = parallel_map((0..args.seeds as u64).collect(), args.threads, |seed| {
                run_kiln(strat, &p, seed, n, *q)
            });
            let suggest_secs: f64 = runs.iter().map(|r| r.1).sum();
            let regrets: Vec<Vec<f64>> = runs
                .iter()
                .map(|(tr, _)| tr.iter().map(|b| (b - p.fopt).max(1e-12).log10()).collect())
                .collect();
            let cells = checkpoints
                .iter()
                .map(|&c| summarise(&regrets.iter().map(|r| r[c - 1]).collect::<Vec<_>>()))
                .collect();
            kiln.insert((p.name.to_string(), name.to_string()), cells);
            eprintln!("  {} {name}: {:.0} s", p.name, t0.elapsed().as_secs_f64());
            timing.push(format!(
                "{:12} {:14} {:6.1} s wall, {:6.1} ms per suggestion",
                p.name,
                name,
                t0.elapsed().as_secs_f64(),
                1e3 * suggest_secs / (args.seeds * n) as f64
            ));
        }
    }
    let py = python
        .and_then(|h| h.join().ok().flatten())
        .map(|s| parse_python(&s))
        .unwrap_or_default();
    // The Python script reports at 10/25/50/n; map our checkpoints onto its columns.
    let py_index = |c: usize| match c {
        25 => Some(1),
        50 => Some(2),
        _ if c == n => Some(3),
        _ => None,
    };

    println!(
        "\n== log10 simple regret, mean ± standard error over {} seeds, {} trials (lower is better) ==",
        args.seeds, n
    );
    print!("{:12} {:16}", "problem", "sampler");
    for c in &checkpoints {
        print!("   {:>13}", format!("@{c}"));
    }
    println!();
    let samplers = [
        "kiln-bayes",
        "kiln-bayes-q4",
        "kiln-random",
        "optuna-tpe",
        "optuna-tpe-indep",
        "optuna-random",
    ];
    let mut verdicts = Vec::new();
    for p in problems() {
        if args.only.as_ref().is_some_and(|o| o != p.name) {
            continue;
        }
        let get = |s: &str, ci: usize| -> Option<Cell> {
            let key = |k: &str| (p.name.to_string(), k.to_string());
            match s.strip_prefix("optuna-") {
                Some(py_name) => {
                    let py_name = if py_name == "tpe-indep" { "tpe_indep" } else { py_name };
                    py.get(&key(py_name))
                        .and_then(|cells| cells.get(py_index(checkpoints[ci])?).copied())
                }
                None => kiln.get(&key(s)).and_then(|cells| cells.get(ci).copied()),
            }
        };
        for s in samplers {
            print!("{:12} {:16}", p.name, s);
            for ci in 0..checkpoints.len() {
                print!("   {}", fmt(get(s, ci)));
            }
            println!();
        }
        for (ci, c) in checkpoints.iter().enumerate() {
            if *c < 50 {
                continue;
            }
            for s in ["kiln-bayes", "kiln-bayes-q4"] {
                let (Some(k), Some(r)) = (get(s, ci), get("kiln-random", ci)) else {
                    continue;
                };
                let tpe = get("optuna-tpe", ci);
                let orand = get("optuna-random", ci);
                let vs_tpe = match tpe {
                    Some(t) if k.mean <= t.mean + t.se => "matches/beats TPE",
                    Some(_) => "WORSE than TPE",
                    None => "TPE n/a",
                };
                let beats_random = k.mean < r.mean && orand.is_none_or(|o| k.mean < o.mean);
                verdicts.push(format!(
                    "{:12} {:14} @{:<4} {:18} ({:+.2} vs TPE), {}",
                    p.name,
                    s,
                    c,
                    vs_tpe,
                    tpe.map_or(f64::NAN, |t| k.mean - t.mean),
                    if beats_random {
                        "beats random"
                    } else {
                        "NOT better than random"
                    }
                ));
            }
        }
        println!();
    }
    println!("== goal check (kiln mean <= TPE mean + TPE standard error) ==");
    for v in verdicts {
        println!("{v}");
    }
    println!("\n== time ==");
    for t in timing {
        println!("{t}");
    }
    println!("{}", latency(100));
    println!("{}", latency(500));
}

/// Wall time of one Bayesian suggestion with `n` finished trials (Hartmann6, 6-D) and 4 running.
fn latency(n: usize) -> String {
    let p = &problems()[1];
    let space = space_of(&p.bounds);
    let mut history: Vec<Trial> = (0..n + 4)
        .map(|k| {
            let a = random_assignment(&space, 7, k);
            let y = (p.f)(&point(&a, 6));
            Trial::completed(a, y)
        })
        .collect();
    for t in &mut history[n..] {
        t.state = TrialState::Running;
    }
    let strat = StrategyConfig::Bayesian(BayesianConfig::default());
    let mut times = Vec::new();
    for seed in 0..5 {
        let t0 = Instant::now();
        let _ = suggest(&strat, &space, &history, Direction::Minimize, seed, n + 4);
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    format!(
        "one Bayesian suggestion with {n} finished + 4 running trials (6-D): median {:.0} ms, max {:.0} ms",
        times[2], times[4]
    )
}

// ---------------------------------------------------------------- part 2: Hyperband

const R: usize = 27;
const MF_FOPT: f64 = -3.32237;

/// mf_bench.py's curve: f + (4 − f)·exp(−t/τ) + N(0, 0.02²), τ = 1 + 8·x0, f = Hartmann6 − f*.
fn curve(x: &[f64], t: usize, noise: &mut Noise) -> f64 {
    let f = hartmann6(x) - MF_FOPT;
    let tau = 1.0 + 8.0 * x[0];
    f + (4.0 - f) * (-(t as f64) / tau).exp() + 0.02 * noise.normal()
}

/// A small seeded Gaussian source for the curve noise (the library's generator is private).
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next();
        let u2 = self.next();
        (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
    }
}

#[derive(Clone, Copy)]
enum MfMode {
    RandomFull,
    RandomAsha,
    KilnHyperband,
}

/// (epochs used, best final value) after every trial, until `budget` epochs are spent.
fn run_mf(mode: MfMode, seed: u64, budget: usize) -> Vec<(usize, f64)> {
    let space = space_of(&[(0.0, 1.0); 6]);
    let config = HyperbandConfig {
        min_resource: 1,
        max_resource: R as u32,
    };
    let strategy = StrategyConfig::Hyperband(config);
    let mut noise = Noise(seed.wrapping_mul(7919).wrapping_add(17));
    let mut history: Vec<Trial> = Vec::new();
    let mut used = 0;
    let mut best = f64::INFINITY;
    let mut trace = Vec::new();
    while used < budget {
        let k = history.len();
        let a = match mode {
            MfMode::KilnHyperband => {
                suggest(&strategy, &space, &history, Direction::Minimize, seed, k).expect("valid space")
            }
            _ => random_assignment(&space, seed, k),
        };
        let x = point(&a, 6);
        history.push(Trial::running(a));
        let mut last = f64::NAN;
        let mut stopped = false;
        for t in 1..=R {
            last = curve(&x, t, &mut noise);
            used += 1;
            history[k].intermediate.push(last);
            if !matches!(mode, MfMode::RandomFull) && hyperband_should_stop(k, &history, &config, Direction::Minimize) {
                stopped = true;
                break;
            }
        }
        history[k].state = if stopped {
            TrialState::Stopped { objective: Some(last) }
        } else {
            best = best.min(last);
            TrialState::Completed { objective: last }
        };
        history[k].finish_seq = Some(k as u64);
        trace.push((used, best));
    }
    trace
}

fn best_at(trace: &[(usize, f64)], epochs: usize) -> f64 {
    trace
        .iter()
        .take_while(|(u, _)| *u <= epochs)
        .last()
        .map_or(f64::INFINITY, |(_, b)| *b)
}

fn mf_part(args: &Args) {
    let budget = 1500;
    let seeds: Vec<u64> = (0..args.seeds as u64).collect();
    let log = |v: f64| v.max(1e-6).log10();
    let modes = [
        ("random (27 epochs each)", MfMode::RandomFull),
        ("random + kiln ASHA stop", MfMode::RandomAsha),
        ("kiln Hyperband", MfMode::KilnHyperband),
    ];
    let t0 = Instant::now();
    let traces: Vec<Vec<Vec<(usize, f64)>>> = modes
        .iter()
        .map(|&(_, m)| parallel_map(seeds.clone(), args.threads, |s| run_mf(m, s, budget)))
        .collect();
    let quality =
        |tr: &[Vec<(usize, f64)>], e: usize| summarise(&tr.iter().map(|t| log(best_at(t, e))).collect::<Vec<_>>());
    let target = quality(&traces[0], budget);
    println!(
        "\n== Hyperband on mf_bench curves (R = {R} epochs, {} seeds): log10 final regret, mean ± se ==",
        args.seeds
    );
    println!(
        "{:26} {:>15} {:>15} {:>15}   epochs to reach random's @{budget}",
        "strategy", "@500 epochs", "@1000 epochs", "@1500 epochs"
    );
    for ((name, _), tr) in modes.iter().zip(&traces) {
        let reach = (1..=budget).step_by(10).find(|&e| quality(tr, e).mean <= target.mean);
        println!(
            "{:26} {:>15} {:>15} {:>15}   {}",
            name,
            fmt(Some(quality(tr, 500))),
            fmt(Some(quality(tr, 1000))),
            fmt(Some(quality(tr, budget))),
            match reach {
                Some(e) => format!("{e} ({:.2} of random's budget)", e as f64 / budget as f64),
                None => "not reached".into(),
            }
        );
    }
    println!("({:.1} s)", t0.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------- main

struct Args {
    trials: usize,
    seeds: usize,
    threads: usize,
    script: PathBuf,
    no_python: bool,
    only: Option<String>,
    skip_mf: bool,
    skip_hpo: bool,
}

fn main() {
    let mut args = Args {
        trials: 100,
        seeds: 10,
        threads: 2,
        script: PathBuf::from("../shared/bench/hpo/hpo_bench.py"),
        no_python: false,
        only: None,
        skip_mf: false,
        skip_hpo: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().unwrap_or_default();
        match a.as_str() {
            "--trials" => args.trials = val().parse().unwrap_or(100),
            "--seeds" => args.seeds = val().parse().unwrap_or(10),
            "--threads" => args.threads = val().parse().unwrap_or(2),
            "--script" => args.script = PathBuf::from(val()),
            "--no-python" => args.no_python = true,
            "--only" => args.only = Some(val()),
            "--skip-mf" => args.skip_mf = true,
            "--skip-hpo" => args.skip_hpo = true,
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    if let Ok(abs) = std::fs::canonicalize(&args.script) {
        args.script = abs;
    } else if !args.no_python {
        eprintln!(
            "baseline script {} not found; running without Optuna (pass --script)",
            args.script.display()
        );
        args.no_python = true;
    }
    if !args.skip_hpo {
        hpo_part(&args);
    }
    if !args.skip_mf {
        mf_part(&args);
    }
}
