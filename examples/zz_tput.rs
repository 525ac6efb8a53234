fn main() {
    let which = std::env::args().nth(1).unwrap_or_default();
    let peer = shmkit::bench::TputPeer::ALL.into_iter().find(|p| p.name() == which).unwrap();
    for _ in 0..3 {
        let n = 50_000_000;
        let d = shmkit::bench::tput(peer, n).unwrap();
        println!("{}: {:.1} M/s", peer.name(), n as f64 / d.as_secs_f64() / 1e6);
    }
}
