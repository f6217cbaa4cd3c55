use clap::Parser;
use portok::{cli::Cli, commands};

fn main() {
    let cli = Cli::parse();
    let code = match commands::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            commands::exit_code(&err)
        }
    };
    std::process::exit(code);
}
