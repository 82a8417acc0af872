<?php
/**
 * Clean uninstall (Plugins > Delete): the plugin's options, its scheduled retry and the JSON-LD
 * meta it printed. The JSON-LD is the hub's data, which the hub still holds and the agent can write
 * again; without this plugin nothing reads it.
 *
 * Spool files already in the spool directory are left alone: they belong to the agent's queue,
 * and the agent consumes them whether or not this plugin is installed.
 *
 * @package BridgeAgent
 */

defined( 'WP_UNINSTALL_PLUGIN' ) || exit;

foreach ( array( 'bridge_agent_spool_dir', 'bridge_agent_status', 'bridge_agent_pending' ) as $bridge_agent_option ) {
	delete_option( $bridge_agent_option );
}
wp_clear_scheduled_hook( 'bridge_agent_retry_pending' );
delete_post_meta_by_key( '_bridge_jsonld' );
