//! The in-guest agent packed into the HAL initramfs: reads its settings from the kernel
//! command line ([`config`]), detects the TEE and obtains attestation reports
//! ([`tee`]), and sends events and logs to the manager over a framed, acknowledged
//! channel that survives reconnects ([`channel`]). [`events`] builds the messages.

pub mod channel;
pub mod config;
pub mod events;
pub mod tee;
