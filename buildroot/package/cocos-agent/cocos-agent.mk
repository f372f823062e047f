################################################################################
#
# cocos-agent
#
# Built from this workspace (local site method) with buildroot's cargo package
# infrastructure. Buildroot vendors crates only for downloaded packages, so the
# crates come from a vendor directory made beforehand with buildroot/vendor.sh
# (`cargo vendor --locked` of the workspace's Cargo.lock into
# target/buildroot-vendor); the build is --offline and --locked, so it uses
# exactly the versions and checksums of Cargo.lock.
#
################################################################################

COCOS_AGENT_VERSION = 0.1.0
COCOS_AGENT_SITE = $(BR2_EXTERNAL_COCOS_PATH)/..
COCOS_AGENT_SITE_METHOD = local
COCOS_AGENT_SUBDIR = agent
COCOS_AGENT_LICENSE = Apache-2.0
# Do not copy build output or VCS data into the build directory.
COCOS_AGENT_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = --exclude target --exclude .git
COCOS_AGENT_VENDOR_DIR = $(BR2_EXTERNAL_COCOS_PATH)/../target/buildroot-vendor
# The workspace's rust-version follows rustup's stable; buildroot pins its own rustc.
COCOS_AGENT_CARGO_BUILD_OPTS = \
	--ignore-rust-version \
	--bin cocos-agent \
	--config 'source.crates-io.replace-with="cocos-vendored"' \
	--config 'source.cocos-vendored.directory="$(COCOS_AGENT_VENDOR_DIR)"'

define COCOS_AGENT_CHECK_VENDOR
	@test -f $(COCOS_AGENT_VENDOR_DIR)/.cocos-vendored || \
		{ echo "cocos-agent: no vendored crates in $(COCOS_AGENT_VENDOR_DIR): run buildroot/vendor.sh"; exit 1; }
endef
COCOS_AGENT_PRE_BUILD_HOOKS += COCOS_AGENT_CHECK_VENDOR

define COCOS_AGENT_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 \
		$(@D)/target/$(RUSTC_TARGET_NAME)/$(if $(BR2_ENABLE_DEBUG),debug,release)/cocos-agent \
		$(TARGET_DIR)/bin/cocos-agent
endef

$(eval $(cargo-package))
