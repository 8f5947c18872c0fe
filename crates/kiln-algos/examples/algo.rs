//! Development entry point: behaves like `kiln algo ...` until the kiln binary forwards to it.
//! `algo algo xgboost train --ml-root DIR` == `kiln algo xgboost train --ml-root DIR`.

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("algo") {
        args.remove(0);
    }
    std::process::exit(kiln_algos::cli::run(&args));
}
