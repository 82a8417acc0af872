<?php
/**
 * Plugin Name:          Bridge Agent companion
 * Plugin URI:           https://github.com/bridge-agent/bridge-agent
 * Description:          Tells the bridge-agent daemon on this server which products changed (spool files), and prints the SEO hub's JSON-LD in product page heads.
 * Version:              1.0.0
 * Requires at least:    6.0
 * Requires PHP:         7.4
 * Author:               bridge-agent
 * License:              GPL-2.0-or-later
 * License URI:          https://www.gnu.org/licenses/gpl-2.0.html
 * Text Domain:          bridge-agent
 * WC requires at least: 7.0
 * WC tested up to:      9.4
 *
 * The store-side half of bridge-agent for WooCommerce (design.md sections 1 and 5):
 *
 * - Bridge_Agent_Changes listens to WooCommerce's CRUD hooks and WordPress core's post hooks,
 *   collects the product changes of one request in memory, coalesced by product, and hands them
 *   to Bridge_Agent_Spool at `shutdown`, which writes one spool file per request (temporary name,
 *   then an atomic rename). A hook is only a hint: the agent re-fetches the product through the
 *   REST API, so a duplicate or spurious event costs one re-fetch and never wrong data.
 * - Bridge_Agent_Structured_Data prints the product's `_bridge_jsonld` meta (written by the agent)
 *   in the page head, and then suppresses WooCommerce's own Product markup so that search engines
 *   see one Product entity, not two.
 * - Bridge_Agent_Admin is the settings page, the status line and the admin notice.
 *
 * The rule everything here follows: the plugin never breaks or slows the store. Every file system
 * call is guarded; a failure is recorded, logged and shown to administrators, never raised.
 *
 * @package BridgeAgent
 */

defined( 'ABSPATH' ) || exit;

define( 'BRIDGE_AGENT_PLUGIN_VERSION', '1.0.0' );
define( 'BRIDGE_AGENT_PLUGIN_FILE', __FILE__ );

require_once __DIR__ . '/includes/class-bridge-agent-spool.php';
require_once __DIR__ . '/includes/class-bridge-agent-changes.php';
require_once __DIR__ . '/includes/class-bridge-agent-structured-data.php';
require_once __DIR__ . '/includes/class-bridge-agent-admin.php';

/**
 * Wires the parts together. One instance per request.
 */
final class Bridge_Agent_Plugin {

	/** WP-Cron hook that retries events a failed spool write kept. */
	const RETRY_HOOK = 'bridge_agent_retry_pending';

	/**
	 * Registers every hook. Called once, when the plugin file loads.
	 */
	public static function boot() {
		$spool   = new Bridge_Agent_Spool();
		$changes = new Bridge_Agent_Changes( $spool );
		$changes->register();
		( new Bridge_Agent_Structured_Data() )->register();
		if ( is_admin() ) {
			( new Bridge_Agent_Admin( $spool ) )->register();
		}
		add_action(
			self::RETRY_HOOK,
			static function () use ( $spool ) {
				$spool->retry_pending();
			}
		);
		// The plugin never touches orders, so it is compatible with WooCommerce's order tables.
		add_action(
			'before_woocommerce_init',
			static function () {
				if ( class_exists( '\Automattic\WooCommerce\Utilities\FeaturesUtil' ) ) {
					\Automattic\WooCommerce\Utilities\FeaturesUtil::declare_compatibility( 'custom_order_tables', BRIDGE_AGENT_PLUGIN_FILE, true );
				}
			}
		);
		register_activation_hook( BRIDGE_AGENT_PLUGIN_FILE, array( __CLASS__, 'activate' ) );
		register_deactivation_hook( BRIDGE_AGENT_PLUGIN_FILE, array( __CLASS__, 'deactivate' ) );
	}

	/**
	 * Schedules the hourly retry of kept events.
	 */
	public static function activate() {
		if ( ! wp_next_scheduled( self::RETRY_HOOK ) ) {
			wp_schedule_event( time() + HOUR_IN_SECONDS, 'hourly', self::RETRY_HOOK );
		}
	}

	/**
	 * Removes the scheduled retry; settings and kept events stay until uninstall.
	 */
	public static function deactivate() {
		wp_clear_scheduled_hook( self::RETRY_HOOK );
	}
}

Bridge_Agent_Plugin::boot();
