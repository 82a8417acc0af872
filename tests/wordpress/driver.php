<?php
/**
 * Test driver: one PHP process is one WordPress request.
 *
 *     php driver.php <wordpress dir> install '{"url": "http://127.0.0.1:8080"}'
 *     php driver.php <wordpress dir> ops '[{"op": "create", "title": "Hoodie", "sku": "H-1"}, ...]'
 *
 * `ops` runs every operation in the same request, through the same WordPress functions the admin,
 * the REST API and WooCommerce call (wp_insert_post, wp_trash_post, do_action, ...). The companion
 * plugin then writes its spool file at shutdown, as after any request. The result is printed as one
 * line `@@result <json>`; anything else printed (a PHP warning, say) is visible to the test.
 *
 * @package BridgeAgentTests
 */

if ( 'cli' !== PHP_SAPI || $argc < 3 ) {
	fwrite( STDERR, "usage: php driver.php <wordpress dir> <command> [json]\n" );
	exit( 2 );
}

$bridge_root    = rtrim( $argv[1], '/' );
$bridge_command = $argv[2];
$bridge_args    = isset( $argv[3] ) ? json_decode( $argv[3], true ) : array();

// What a web request would have; WordPress reads these while loading.
$_SERVER['HTTP_HOST']   = getenv( 'BRIDGE_TEST_HOST' ) ? getenv( 'BRIDGE_TEST_HOST' ) : '127.0.0.1';
$_SERVER['REQUEST_URI'] = '/';
$_SERVER['SERVER_NAME'] = '127.0.0.1';

if ( 'install' === $bridge_command ) {
	define( 'WP_INSTALLING', true );
}
define( 'WP_USE_THEMES', false );
require $bridge_root . '/wp-load.php';
require_once ABSPATH . 'wp-admin/includes/plugin.php';

/**
 * A stand-in product from {"standin": {"id": .., "sku": .., "parent": ..}}; other values unchanged.
 *
 * @param mixed $value An argument for do_action.
 * @return mixed
 */
function bridge_test_arg( $value ) {
	if ( is_array( $value ) && isset( $value['standin'] ) ) {
		$s = $value['standin'];
		return new Bridge_Test_Product( $s['id'], isset( $s['sku'] ) ? $s['sku'] : '', isset( $s['parent'] ) ? $s['parent'] : 0 );
	}
	return $value;
}

/**
 * Runs one operation; returns what the test needs to know about it.
 *
 * @param array $op The operation.
 * @return mixed
 */
function bridge_test_op( array $op ) {
	switch ( $op['op'] ) {
		case 'create':
			$post = array(
				'post_type'    => isset( $op['type'] ) ? $op['type'] : 'product',
				'post_title'   => $op['title'],
				'post_status'  => isset( $op['status'] ) ? $op['status'] : 'publish',
				'post_content' => isset( $op['content'] ) ? $op['content'] : '',
				'post_parent'  => isset( $op['parent'] ) ? (int) $op['parent'] : 0,
			);
			if ( isset( $op['password'] ) ) {
				$post['post_password'] = $op['password'];
			}
			if ( isset( $op['import_id'] ) ) {
				$post['import_id'] = (int) $op['import_id'];
			}
			if ( isset( $op['sku'] ) ) {
				$post['meta_input'] = array( '_sku' => $op['sku'] );
			}
			return wp_insert_post( $post, true );
		case 'update':
			$post = array( 'ID' => (int) $op['id'] );
			foreach ( array( 'title' => 'post_title', 'status' => 'post_status', 'content' => 'post_content' ) as $key => $field ) {
				if ( isset( $op[ $key ] ) ) {
					$post[ $field ] = $op[ $key ];
				}
			}
			return wp_update_post( $post, true );
		case 'meta':
			// update_post_meta() unslashes its value; WooCommerce's data store slashes first, so
			// the stored value is exactly the one given. So does this.
			return update_post_meta( (int) $op['id'], $op['key'], wp_slash( $op['value'] ) );
		case 'trash':
			return (bool) wp_trash_post( (int) $op['id'] );
		case 'untrash':
			return (bool) wp_untrash_post( (int) $op['id'] );
		case 'delete':
			return (bool) wp_delete_post( (int) $op['id'], true );
		case 'do_action':
			do_action_ref_array( $op['hook'], array_map( 'bridge_test_arg', $op['args'] ) );
			return true;
		case 'apply_filters':
			return apply_filters_ref_array( $op['hook'], array_map( 'bridge_test_arg', $op['args'] ) );
		case 'option':
			return update_option( $op['name'], $op['value'] );
		case 'delete_option':
			return delete_option( $op['name'] );
		case 'get':
			$post = get_post( (int) $op['id'] );
			return $post ? array(
				'title'  => $post->post_title,
				'status' => $post->post_status,
				'url'    => get_permalink( $post ),
			) : null;
		case 'get_meta':
			return get_post_meta( (int) $op['id'], $op['key'], true );
		case 'get_option':
			return get_option( $op['name'], null );
		case 'uninstall':
			deactivate_plugins( 'bridge-agent/bridge-agent.php' );
			uninstall_plugin( 'bridge-agent/bridge-agent.php' );
			return true;
		case 'deactivate':
			deactivate_plugins( 'bridge-agent/bridge-agent.php' );
			return true;
		case 'activate':
			$result = activate_plugin( 'bridge-agent/bridge-agent.php' );
			return is_wp_error( $result ) ? $result->get_error_message() : true;
		case 'flush_at':
			add_filter(
				'bridge_agent_flush_at',
				static function () use ( $op ) {
					return (int) $op['value'];
				}
			);
			return true;
		case 'app_password':
			list( $password ) = WP_Application_Passwords::create_new_application_password( 1, array( 'name' => 'tests ' . wp_generate_password( 6, false ) ) );
			return $password;
		case 'same_problem':
			return Bridge_Agent_Spool::same_problem( $op['a'], $op['b'] );
		case 'scheduled':
			return wp_next_scheduled( $op['hook'] );
		case 'do_cron':
			do_action( $op['hook'] );
			return true;
	}
	throw new InvalidArgumentException( 'unknown op ' . $op['op'] );
}

if ( 'install' === $bridge_command ) {
	require_once ABSPATH . 'wp-admin/includes/upgrade.php';
	$bridge_installed = wp_install( 'Bridge test store', 'admin', 'admin@example.com', false, '', 'password' );
	update_option( 'siteurl', $bridge_args['url'] );
	update_option( 'home', $bridge_args['url'] );
	update_option( 'permalink_structure', '' );
	switch_theme( 'bridge-test' );
	// As "Plugins > Add New > Upload Plugin" does: WordPress's own upgrader unpacks the zip.
	require_once ABSPATH . 'wp-admin/includes/class-wp-upgrader.php';
	require_once ABSPATH . 'wp-admin/includes/file.php';
	WP_Filesystem();
	$bridge_upgrader  = new Plugin_Upgrader( new Automatic_Upgrader_Skin() );
	$bridge_installed = $bridge_upgrader->install( $bridge_args['zip'] );
	if ( true !== $bridge_installed || 'bridge-agent/bridge-agent.php' !== $bridge_upgrader->plugin_info() ) {
		$bridge_why = is_wp_error( $bridge_installed ) ? $bridge_installed->get_error_message() : implode( ' ', $bridge_upgrader->skin->get_upgrade_messages() );
		echo '@@result ' . wp_json_encode( 'zip install failed: ' . $bridge_why ) . "\n";
		exit( 0 );
	}
	$bridge_result = activate_plugin( 'bridge-agent/bridge-agent.php' );
	echo '@@result ' . wp_json_encode( is_wp_error( $bridge_result ) ? $bridge_result->get_error_message() : true ) . "\n";
	exit( 0 );
}

if ( 'ops' === $bridge_command ) {
	$bridge_out = array();
	foreach ( $bridge_args as $bridge_op ) {
		$bridge_value = bridge_test_op( $bridge_op );
		$bridge_out[] = is_wp_error( $bridge_value ) ? array( 'error' => $bridge_value->get_error_message() ) : $bridge_value;
	}
	echo '@@result ' . wp_json_encode( $bridge_out ) . "\n";
	exit( 0 );
}

fwrite( STDERR, "unknown command $bridge_command\n" );
exit( 2 );
