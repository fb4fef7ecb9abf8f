// Prints the diagnostics for each file given: `cargo run --example check -- FILE...`.
fn main() {
    for arg in std::env::args().skip(1) {
        let opts = galley_blueprint::LoadOptions { env: std::env::var("ENV").ok(), ..Default::default() };
        match galley_blueprint::load_file(std::path::Path::new(&arg), &opts) {
            Ok(_) => println!("{arg}: OK"),
            Err(d) => {
                for x in d.items() {
                    println!("{}|{}|{}|{}|{}|{:?}", arg.rsplit('/').next().unwrap(), x.line, x.column, x.path, x.message, x.hint);
                }
            }
        }
    }
}
