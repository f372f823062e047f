//! The initial VMSA (VM save area) page of each vCPU, as the VMM hands it to the
//! AMD firmware for SEV-ES and SEV-SNP launches. Layout: AMD APM vol. 2, table B-4
//! (Linux `struct sev_es_save_area`). Only fields with non-zero reset values are
//! written; everything else stays zero, as in QEMU/KVM.

use crate::MeasureError;

/// Size of a VMSA page.
pub const VMSA_SIZE: usize = 4096;
/// The BSP starts at the architectural reset vector.
pub const BSP_EIP: u32 = 0xffff_fff0;

/// The VMM that builds the VMSA: they differ in a few reset values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum VmmType {
    /// QEMU/KVM (with KVM_SEV_INIT2 FPU defaults).
    #[serde(rename = "QEMU")]
    Qemu,
    /// AWS EC2.
    #[serde(rename = "ec2")]
    Ec2,
    /// Google Compute Engine.
    #[serde(rename = "gce")]
    Gce,
}

impl VmmType {
    /// All VMM types.
    pub const ALL: [VmmType; 3] = [VmmType::Qemu, VmmType::Ec2, VmmType::Gce];

    /// The spelling sev-snp-measure uses.
    pub fn name(self) -> &'static str {
        match self {
            VmmType::Qemu => "QEMU",
            VmmType::Ec2 => "ec2",
            VmmType::Gce => "gce",
        }
    }

    /// Parses the exact spelling sev-snp-measure accepts ("QEMU", "ec2", "gce").
    pub fn parse_exact(s: &str) -> Result<Self, MeasureError> {
        Self::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| MeasureError::UnknownVmm(s.to_owned()))
    }

    /// Parses ignoring ASCII case.
    pub fn parse_loose(s: &str) -> Result<Self, MeasureError> {
        Self::ALL
            .into_iter()
            .find(|v| v.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| MeasureError::UnknownVmm(s.to_owned()))
    }
}

/// Byte offsets in the save area.
mod off {
    pub const ES: usize = 0x000;
    pub const CS: usize = 0x010;
    pub const SS: usize = 0x020;
    pub const DS: usize = 0x030;
    pub const FS: usize = 0x040;
    pub const GS: usize = 0x050;
    pub const GDTR: usize = 0x060;
    pub const LDTR: usize = 0x070;
    pub const IDTR: usize = 0x080;
    pub const TR: usize = 0x090;
    pub const EFER: usize = 0x0d0;
    pub const CR4: usize = 0x148;
    pub const CR0: usize = 0x158;
    pub const DR7: usize = 0x160;
    pub const DR6: usize = 0x168;
    pub const RFLAGS: usize = 0x170;
    pub const RIP: usize = 0x178;
    pub const G_PAT: usize = 0x268;
    pub const RDX: usize = 0x310;
    pub const SEV_FEATURES: usize = 0x3b0;
    pub const XCR0: usize = 0x3e8;
    pub const MXCSR: usize = 0x408;
    pub const X87_FCW: usize = 0x410;
}

fn put(page: &mut [u8; VMSA_SIZE], at: usize, bytes: &[u8]) {
    if let Some(dst) = page.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

/// Writes a `vmcb_seg` {selector u16, attrib u16, limit u32, base u64}.
fn seg(page: &mut [u8; VMSA_SIZE], at: usize, selector: u16, attrib: u16, limit: u32, base: u64) {
    put(page, at, &selector.to_le_bytes());
    put(page, at + 2, &attrib.to_le_bytes());
    put(page, at + 4, &limit.to_le_bytes());
    put(page, at + 8, &base.to_le_bytes());
}

/// Builds one vCPU's initial VMSA page.
pub fn build(eip: u32, sev_features: u64, vcpu_sig: u64, vmm: VmmType) -> Box<[u8; VMSA_SIZE]> {
    let mut g_pat: u64 = 0x0007_0406_0007_0406; // PAT reset value, APM vol. 2 §A.3
    let (cs_flags, ss_flags, tr_flags, rdx, mxcsr, fcw): (u16, u16, u16, u64, u32, u16) = match vmm
    {
        VmmType::Qemu => (0x9b, 0x93, 0x8b, vcpu_sig, 0x1f80, 0x37f),
        VmmType::Ec2 => {
            let cs = if eip == BSP_EIP { 0x9a } else { 0x9b };
            (cs, 0x92, 0x83, 0x600, 0, 0)
        }
        VmmType::Gce => {
            g_pat = 0x0007_0106;
            (0x9b, 0x93, 0x8b, 0x600, 0, 0)
        }
    };
    let mut p = Box::new([0u8; VMSA_SIZE]);
    let page = &mut *p;
    seg(page, off::ES, 0, 0x93, 0xffff, 0);
    seg(
        page,
        off::CS,
        0xf000,
        cs_flags,
        0xffff,
        u64::from(eip & 0xffff_0000),
    );
    seg(page, off::SS, 0, ss_flags, 0xffff, 0);
    seg(page, off::DS, 0, 0x93, 0xffff, 0);
    seg(page, off::FS, 0, 0x93, 0xffff, 0);
    seg(page, off::GS, 0, 0x93, 0xffff, 0);
    seg(page, off::GDTR, 0, 0, 0xffff, 0);
    seg(page, off::IDTR, 0, 0, 0xffff, 0);
    seg(page, off::LDTR, 0, 0x82, 0xffff, 0);
    seg(page, off::TR, 0, tr_flags, 0xffff, 0);
    put(page, off::EFER, &0x1000u64.to_le_bytes()); // KVM sets EFER.SVME
    put(page, off::CR4, &0x40u64.to_le_bytes()); // KVM sets CR4.MCE
    put(page, off::CR0, &0x10u64.to_le_bytes());
    put(page, off::DR7, &0x400u64.to_le_bytes());
    put(page, off::DR6, &0xffff_0ff0u64.to_le_bytes());
    put(page, off::RFLAGS, &0x2u64.to_le_bytes());
    put(page, off::RIP, &u64::from(eip & 0xffff).to_le_bytes());
    put(page, off::G_PAT, &g_pat.to_le_bytes());
    put(page, off::RDX, &rdx.to_le_bytes());
    put(page, off::SEV_FEATURES, &sev_features.to_le_bytes());
    put(page, off::XCR0, &1u64.to_le_bytes());
    put(page, off::MXCSR, &mxcsr.to_le_bytes());
    put(page, off::X87_FCW, &fcw.to_le_bytes());
    p
}

/// The BSP page and (if the reset EIP allows APs) the AP page.
pub struct VmsaPages {
    /// vCPU 0.
    pub bsp: Box<[u8; VMSA_SIZE]>,
    /// vCPUs 1..n (all identical); `None` if the AP reset EIP is 0.
    pub ap: Option<Box<[u8; VMSA_SIZE]>>,
}

impl VmsaPages {
    /// Builds the BSP page and, for a non-zero AP reset EIP, the AP page.
    pub fn new(ap_eip: u32, sev_features: u64, vcpu_sig: u64, vmm: VmmType) -> Self {
        VmsaPages {
            bsp: build(BSP_EIP, sev_features, vcpu_sig, vmm),
            ap: (ap_eip != 0).then(|| build(ap_eip, sev_features, vcpu_sig, vmm)),
        }
    }

    /// The pages of a launch with `vcpus` vCPUs: the BSP's, then one AP page per other vCPU.
    pub fn pages(&self, vcpus: u32) -> Result<Vec<Box<[u8; VMSA_SIZE]>>, MeasureError> {
        let ap = self.ap_for(vcpus)?;
        let mut out = vec![self.bsp.clone()];
        out.extend((1..vcpus).filter_map(|_| ap.map(|p| Box::new(*p))));
        Ok(out)
    }

    /// The AP page, or the error for more than one vCPU without an AP reset EIP.
    pub fn ap_for(&self, vcpus: u32) -> Result<Option<&[u8; VMSA_SIZE]>, MeasureError> {
        match (&self.ap, vcpus) {
            (_, 0 | 1) => Ok(None),
            (Some(ap), _) => Ok(Some(ap)),
            (None, n) => Err(MeasureError::NoApResetEip { vcpus: n }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bsp_fields_at_apm_offsets() {
        let p = build(BSP_EIP, 0x21, 0x00a0_0f11, VmmType::Qemu);
        // CS: selector 0xf000, attrib 0x9b, limit 0xffff, base 0xffff0000.
        assert_eq!(
            &p[0x10..0x20],
            &[0x00, 0xf0, 0x9b, 0, 0xff, 0xff, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0]
        );
        assert_eq!(
            u64::from_le_bytes(p[0x178..0x180].try_into().unwrap()),
            0xfff0
        );
        assert_eq!(
            u64::from_le_bytes(p[0x310..0x318].try_into().unwrap()),
            0x00a0_0f11
        );
        assert_eq!(
            u64::from_le_bytes(p[0x3b0..0x3b8].try_into().unwrap()),
            0x21
        );
        assert_eq!(
            u32::from_le_bytes(p[0x408..0x40c].try_into().unwrap()),
            0x1f80
        );
        assert_eq!(
            u16::from_le_bytes(p[0x410..0x412].try_into().unwrap()),
            0x37f
        );
        assert!(p[0x670..].iter().all(|&b| b == 0));
    }

    #[test]
    fn ec2_bsp_cs_is_not_accessed() {
        let bsp = build(BSP_EIP, 1, 0, VmmType::Ec2);
        let ap = build(0x80_b004, 1, 0, VmmType::Ec2);
        assert_eq!(bsp[0x12], 0x9a);
        assert_eq!(ap[0x12], 0x9b);
        assert_eq!(
            u64::from_le_bytes(bsp[0x310..0x318].try_into().unwrap()),
            0x600
        );
    }

    #[test]
    fn zero_ap_eip_allows_one_vcpu_only() {
        let v = VmsaPages::new(0, 1, 0, VmmType::Qemu);
        assert!(v.ap_for(1).unwrap().is_none());
        assert!(matches!(
            v.ap_for(2),
            Err(MeasureError::NoApResetEip { vcpus: 2 })
        ));
    }
}
