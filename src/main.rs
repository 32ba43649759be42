fn main() {
    eprintln!("corriere: under construction");
}
