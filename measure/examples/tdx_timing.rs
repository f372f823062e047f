//! Times the parts of a TDX measurement on real inputs (firmware, kernel, initrd given
//! as arguments), one by one on one thread: where `cocos-measure tdx` spends its time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // timing tool, not library code

use std::path::Path;
use std::time::Instant;

use cocos_measure::bzimage::{KernelSetup, LinuxLoad};
use cocos_measure::tdx_launch::{TdxFirmware, TdxInitrd, TdxKernel};
use cocos_measure::Firmware;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [fw, kernel, initrd] = args.as_slice() else {
        eprintln!("usage: tdx_timing FIRMWARE KERNEL INITRD");
        std::process::exit(2);
    };
    let t = Instant::now();
    let i = TdxInitrd::from_file(Path::new(initrd)).unwrap();
    println!("initrd sha384 ({} bytes): {:?}", i.size, t.elapsed());
    let t = Instant::now();
    let f = TdxFirmware::new(Firmware::parse(std::fs::read(fw).unwrap()).unwrap()).unwrap();
    println!("firmware read+parse: {:?}", t.elapsed());
    let t = Instant::now();
    f.mrtd(false).unwrap();
    println!("mrtd: {:?}", t.elapsed());
    let t = Instant::now();
    let k = TdxKernel::from_file(Path::new(kernel)).unwrap();
    println!("kernel read: {:?}", t.elapsed());
    let t = Instant::now();
    let load = LinuxLoad {
        memory: 2 << 30,
        initrd_size: Some(i.size),
        cmdline: "console=ttyS0",
    };
    k.authenticode(&load, KernelSetup::Patched).unwrap();
    println!("kernel authenticode: {:?}", t.elapsed());
}
