fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--version") {
        println!(
            "lapps {} ({})",
            env!("CARGO_PKG_VERSION"),
            lapps::BUILD_VARIANT
        );
    }
}
