<?php
/**
 * The admin side: Settings > Bridge Agent (spool directory and status), the notice shown on every
 * admin screen while change events cannot be written, and a Site Health test.
 *
 * The status comes from the option the spool writer keeps (last file written, current problem,
 * events kept for a retry) and from counting `incoming/` (the backlog: files the agent has not
 * consumed yet). A backlog that only grows means the agent is not running or cannot read the
 * files; the agent's own `bridge-agent status` says which.
 *
 * @package BridgeAgent
 */

defined( 'ABSPATH' ) || exit;

/**
 * Settings page, status line, admin notice and Site Health test.
 */
final class Bridge_Agent_Admin {

	/** The settings page slug. */
	const PAGE = 'bridge-agent';

	/** The settings group. */
	const GROUP = 'bridge_agent';

	/** admin-post action of the "Retry now" button. */
	const RETRY_ACTION = 'bridge_agent_retry';

	/**
	 * The spool writer.
	 *
	 * @var Bridge_Agent_Spool
	 */
	private $spool;

	/**
	 * Constructor.
	 *
	 * @param Bridge_Agent_Spool $spool The spool writer.
	 */
	public function __construct( Bridge_Agent_Spool $spool ) {
		$this->spool = $spool;
	}

	/**
	 * Hooks into the admin.
	 */
	public function register() {
		add_action( 'admin_menu', array( $this, 'add_page' ) );
		add_action( 'admin_init', array( $this, 'register_settings' ) );
		add_action( 'admin_notices', array( $this, 'notice' ) );
		add_action( 'admin_post_' . self::RETRY_ACTION, array( $this, 'retry' ) );
		add_filter( 'plugin_action_links_' . plugin_basename( BRIDGE_AGENT_PLUGIN_FILE ), array( $this, 'action_links' ) );
		add_filter( 'site_status_tests', array( $this, 'site_health_tests' ) );
	}

	/**
	 * Settings > Bridge Agent.
	 */
	public function add_page() {
		add_options_page(
			__( 'Bridge Agent', 'bridge-agent' ),
			__( 'Bridge Agent', 'bridge-agent' ),
			'manage_options',
			self::PAGE,
			array( $this, 'render_page' )
		);
	}

	/**
	 * The spool directory setting.
	 */
	public function register_settings() {
		register_setting(
			self::GROUP,
			Bridge_Agent_Spool::OPTION_DIR,
			array(
				'type'              => 'string',
				'default'           => '',
				'sanitize_callback' => array( $this, 'sanitize_directory' ),
			)
		);
		add_settings_section( 'bridge_agent_spool', __( 'Spool', 'bridge-agent' ), '__return_null', self::PAGE );
		add_settings_field(
			Bridge_Agent_Spool::OPTION_DIR,
			__( 'Spool directory', 'bridge-agent' ),
			array( $this, 'render_directory_field' ),
			self::PAGE,
			'bridge_agent_spool',
			array( 'label_for' => Bridge_Agent_Spool::OPTION_DIR )
		);
	}

	/**
	 * Keeps the old value when the new one is not an absolute path; warns when it is not usable.
	 *
	 * @param mixed $value The submitted value.
	 * @return string
	 */
	public function sanitize_directory( $value ) {
		$value = trim( (string) $value );
		$value = '' === $value ? '' : untrailingslashit( $value );
		if ( '' !== $value && ! path_is_absolute( $value ) ) {
			add_settings_error( Bridge_Agent_Spool::OPTION_DIR, 'bridge_agent_relative', __( 'The spool directory must be an absolute path, such as /var/spool/bridge-agent/main.', 'bridge-agent' ) );
			return (string) get_option( Bridge_Agent_Spool::OPTION_DIR, '' );
		}
		$problem = Bridge_Agent_Spool::problem( $value, true );
		if ( '' !== $value && '' !== $problem ) {
			// settings_errors() prints messages as HTML, and this one quotes the submitted path.
			add_settings_error( Bridge_Agent_Spool::OPTION_DIR, 'bridge_agent_unusable', esc_html( $problem ), 'warning' );
		}
		return $value;
	}

	/**
	 * The directory input (read-only when wp-config.php defines BRIDGE_AGENT_SPOOL_DIR).
	 */
	public function render_directory_field() {
		$locked = Bridge_Agent_Spool::set_by_constant();
		printf(
			'<input type="text" class="regular-text code" id="%1$s" name="%1$s" value="%2$s" %3$s />',
			esc_attr( Bridge_Agent_Spool::OPTION_DIR ),
			esc_attr( $locked ? Bridge_Agent_Spool::directory() : (string) get_option( Bridge_Agent_Spool::OPTION_DIR, '' ) ),
			disabled( $locked, true, false )
		);
		echo '<p class="description">';
		if ( $locked ) {
			esc_html_e( 'Set by the BRIDGE_AGENT_SPOOL_DIR constant in wp-config.php.', 'bridge-agent' );
		} else {
			esc_html_e( 'The spool_dir of this store in the agent\'s agent.toml. The web server user must be able to write to its incoming/ folder.', 'bridge-agent' );
		}
		echo '</p>';
	}

	/**
	 * The settings page: the status line, the status table, the form.
	 */
	public function render_page() {
		if ( ! current_user_can( 'manage_options' ) ) {
			return;
		}
		$rows = $this->status_rows();
		echo '<div class="wrap"><h1>' . esc_html__( 'Bridge Agent', 'bridge-agent' ) . '</h1>';
		echo '<p class="bridge-agent-status-line">' . esc_html( $this->status_line() ) . '</p>';
		echo '<table class="widefat striped bridge-agent-status"><tbody>';
		foreach ( $rows as $label => $value ) {
			echo '<tr><th scope="row">' . esc_html( $label ) . '</th><td>' . esc_html( $value ) . '</td></tr>';
		}
		echo '</tbody></table>';
		if ( ! empty( $this->spool->kept() ) ) {
			echo '<form method="post" action="' . esc_url( admin_url( 'admin-post.php' ) ) . '">';
			echo '<input type="hidden" name="action" value="' . esc_attr( self::RETRY_ACTION ) . '" />';
			wp_nonce_field( self::RETRY_ACTION );
			submit_button( __( 'Write kept changes now', 'bridge-agent' ), 'secondary', 'submit', false );
			echo '</form>';
		}
		echo '<form method="post" action="options.php">';
		settings_fields( self::GROUP );
		do_settings_sections( self::PAGE );
		submit_button();
		echo '</form></div>';
	}

	/**
	 * One line: last event written and backlog, or the problem.
	 *
	 * @return string
	 */
	public function status_line() {
		$status = $this->spool->status();
		$dir    = Bridge_Agent_Spool::directory();
		$parts  = array();
		if ( $status['last_written_at'] > 0 ) {
			/* translators: 1: a time span such as "5 mins", 2: a number of products. */
			$parts[] = sprintf( _n( 'Last event written %1$s ago (%2$d product)', 'Last event written %1$s ago (%2$d products)', $status['last_events'], 'bridge-agent' ), human_time_diff( $status['last_written_at'] ), $status['last_events'] );
		} else {
			$parts[] = __( 'No event written yet', 'bridge-agent' );
		}
		$backlog = Bridge_Agent_Spool::backlog( $dir );
		if ( $backlog >= 0 ) {
			/* translators: %d: a number of files. */
			$parts[] = sprintf( _n( '%d file waiting for the agent', '%d files waiting for the agent', $backlog, 'bridge-agent' ), $backlog );
		}
		$problem = $this->current_problem();
		if ( '' !== $problem ) {
			$parts[] = $problem;
		}
		return implode( ' · ', $parts );
	}

	/**
	 * The status table, label => text.
	 *
	 * @return array<string, string>
	 */
	public function status_rows() {
		$status  = $this->spool->status();
		$dir     = Bridge_Agent_Spool::directory();
		$problem = $this->current_problem();
		$backlog = Bridge_Agent_Spool::backlog( $dir );
		$rows    = array();

		$rows[ __( 'Spool directory', 'bridge-agent' ) ] = '' === $dir ? __( 'not set', 'bridge-agent' )
			: $dir . ( Bridge_Agent_Spool::set_by_constant() ? ' ' . __( '(from wp-config.php)', 'bridge-agent' ) : '' );
		$rows[ __( 'State', 'bridge-agent' ) ]           = '' === $problem ? __( 'ready', 'bridge-agent' ) : $problem;
		if ( $status['last_written_at'] > 0 ) {
			$rows[ __( 'Last event written', 'bridge-agent' ) ] = sprintf(
				/* translators: 1: a date, 2: a time span, 3: a number of products, 4: a file name. */
				_n( '%1$s (%2$s ago), %3$d product, %4$s', '%1$s (%2$s ago), %3$d products, %4$s', $status['last_events'], 'bridge-agent' ),
				gmdate( 'Y-m-d H:i:s \U\T\C', $status['last_written_at'] ),
				human_time_diff( $status['last_written_at'] ),
				$status['last_events'],
				$status['last_file']
			);
		} else {
			$rows[ __( 'Last event written', 'bridge-agent' ) ] = __( 'never', 'bridge-agent' );
		}
		$rows[ __( 'Spool backlog', 'bridge-agent' ) ] = $backlog < 0 ? __( 'cannot be read', 'bridge-agent' )
			/* translators: %d: a number of files. */
			: sprintf( _n( '%d file waiting for the agent', '%d files waiting for the agent', $backlog, 'bridge-agent' ), $backlog );
		$kept = count( $this->spool->kept() );
		if ( $kept > 0 || $status['dropped'] > 0 ) {
			$rows[ __( 'Kept for a retry', 'bridge-agent' ) ] = sprintf(
				/* translators: 1: a number of products, 2: a number of products. */
				__( '%1$d products (written as soon as the spool works; %2$d older ones were left to the agent\'s poll)', 'bridge-agent' ),
				$kept,
				$status['dropped']
			);
		}
		if ( $status['error_at'] > 0 && '' !== $status['error'] ) {
			$rows[ __( 'Failing since', 'bridge-agent' ) ] = gmdate( 'Y-m-d H:i:s \U\T\C', $status['error_at'] );
		}
		return $rows;
	}

	/**
	 * `admin_notices`: an error notice for administrators while events cannot be written.
	 */
	public function notice() {
		if ( ! current_user_can( 'manage_options' ) ) {
			return;
		}
		$problem = $this->current_problem();
		if ( '' === $problem ) {
			return;
		}
		printf(
			'<div class="notice notice-error bridge-agent-notice"><p><strong>%1$s</strong> %2$s <a href="%3$s">%4$s</a></p></div>',
			esc_html__( 'Bridge Agent cannot report product changes to the agent:', 'bridge-agent' ),
			esc_html( $problem ),
			esc_url( admin_url( 'options-general.php?page=' . self::PAGE ) ),
			esc_html__( 'Settings and status', 'bridge-agent' )
		);
	}

	/**
	 * The "Write kept changes now" button (admin-post.php).
	 */
	public function retry() {
		if ( ! current_user_can( 'manage_options' ) ) {
			wp_die( esc_html__( 'Sorry, you are not allowed to do that.', 'bridge-agent' ), 403 );
		}
		check_admin_referer( self::RETRY_ACTION );
		$this->spool->retry_pending();
		wp_safe_redirect( admin_url( 'options-general.php?page=' . self::PAGE ) );
		exit;
	}

	/**
	 * A "Settings" link on the Plugins screen.
	 *
	 * @param array<int|string, string> $links The plugin's links.
	 * @return array<int|string, string>
	 */
	public function action_links( $links ) {
		$url = admin_url( 'options-general.php?page=' . self::PAGE );
		array_unshift( $links, '<a href="' . esc_url( $url ) . '">' . esc_html__( 'Settings', 'bridge-agent' ) . '</a>' );
		return $links;
	}

	/**
	 * Site Health: is the spool writable?
	 *
	 * @param array<string, mixed> $tests Site Health tests.
	 * @return array<string, mixed>
	 */
	public function site_health_tests( $tests ) {
		$tests['direct']['bridge_agent_spool'] = array(
			'label' => __( 'Bridge Agent spool', 'bridge-agent' ),
			'test'  => array( $this, 'site_health_result' ),
		);
		return $tests;
	}

	/**
	 * The Site Health result.
	 *
	 * @return array<string, mixed>
	 */
	public function site_health_result() {
		$problem = $this->current_problem();
		return array(
			'label'       => '' === $problem ? __( 'Product changes reach the bridge agent', 'bridge-agent' ) : __( 'Product changes cannot be written for the bridge agent', 'bridge-agent' ),
			'status'      => '' === $problem ? 'good' : 'critical',
			'badge'       => array(
				'label' => __( 'Bridge Agent', 'bridge-agent' ),
				'color' => '' === $problem ? 'blue' : 'red',
			),
			'description' => '<p>' . esc_html( '' === $problem ? $this->status_line() : $problem ) . '</p>',
			'actions'     => '<a href="' . esc_url( admin_url( 'options-general.php?page=' . self::PAGE ) ) . '">' . esc_html__( 'Settings and status', 'bridge-agent' ) . '</a>',
			'test'        => 'bridge_agent_spool',
		);
	}

	/**
	 * What stops events from being written now: the directory's state first, else the last
	 * write's error while it lasts; '' when events can be written.
	 *
	 * @return string
	 */
	private function current_problem() {
		$problem = Bridge_Agent_Spool::problem( Bridge_Agent_Spool::directory() );
		if ( '' !== $problem ) {
			return $problem;
		}
		return $this->spool->status()['error'];
	}
}
