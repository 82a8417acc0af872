<?php
/**
 * The spool writer: change hooks as files in `<spool_dir>/incoming/` (design.md section 5).
 *
 * Why the rules hold:
 * - Atomic: a file is written under a temporary name that starts with "." and does not end in
 *   ".json", flushed to disk, then renamed to its final `*.json` name. The agent only lists
 *   `*.json` names that do not start with ".", so it never reads half a file; rename() within one
 *   directory is atomic on every POSIX file system.
 * - Ordered: names start with the UTC time to the microsecond, so the agent's "oldest first"
 *   holds even where modification times are coarse.
 * - Never fatal: every file system call runs under a temporary error handler; a failure becomes a
 *   message in the status option, one line in the PHP error log (when the problem starts, changes
 *   or ends, and at most every ten minutes while it lasts) and an admin notice.
 * - Cheap when healthy: the status option is autoloaded (read with the other options, no query of
 *   its own) and rewritten only when the state changes or once a minute, so a healthy write costs
 *   a file and no database write.
 * - Nothing lost while the spool is unwritable: the events that could not be written are kept in
 *   an option (coalesced by product, at most MAX_PENDING products) and written first by the next
 *   request that writes, or by the hourly retry. Beyond the cap the oldest are dropped and
 *   counted; the agent's modified-since poll and reconciliation find those products anyway.
 *
 * @package BridgeAgent
 */

defined( 'ABSPATH' ) || exit;

/**
 * Writes spool files and keeps the status the admin page shows.
 */
final class Bridge_Agent_Spool {

	/** Format version of a spool document. */
	const FORMAT_VERSION = 1;

	/** wp-config.php constant that sets the spool directory (wins over the option). */
	const CONSTANT = 'BRIDGE_AGENT_SPOOL_DIR';

	/** Option holding the spool directory when the constant is not defined. */
	const OPTION_DIR = 'bridge_agent_spool_dir';

	/** Option holding the status shown in the admin (see status()). */
	const OPTION_STATUS = 'bridge_agent_status';

	/** Option holding events kept after a failed write. */
	const OPTION_PENDING = 'bridge_agent_pending';

	/** At about 110 bytes per event, a file stays far below the agent's 1 MiB limit. */
	const MAX_EVENTS_PER_FILE = 5000;

	/** Products kept for a later write while the spool is unwritable. */
	const MAX_PENDING = 5000;

	/** Seconds between two status refreshes while writes succeed (see succeeded()). */
	const STATUS_EVERY = 60;

	/** Seconds between two log lines about the same ongoing problem. */
	const LOG_EVERY = 600;

	/** The events the agent understands, weakest first (see merge()). */
	const EVENTS = array( 'stock.updated', 'product.updated', 'product.created', 'product.deleted' );

	/**
	 * The configured spool directory without a trailing slash, or '' when none is set.
	 *
	 * @return string
	 */
	public static function directory() {
		if ( self::set_by_constant() ) {
			$dir = (string) constant( self::CONSTANT );
		} else {
			$dir = (string) get_option( self::OPTION_DIR, '' );
		}
		$dir = trim( $dir );
		return '' === $dir ? '' : untrailingslashit( $dir );
	}

	/**
	 * Whether wp-config.php sets the directory (the settings field is then read-only).
	 *
	 * @return bool
	 */
	public static function set_by_constant() {
		return defined( self::CONSTANT ) && '' !== trim( (string) constant( self::CONSTANT ) );
	}

	/**
	 * What stops spool files from being written to $dir, or '' when nothing does.
	 *
	 * @param string $dir    The spool directory.
	 * @param bool   $create Create `incoming/` when the spool directory exists without it.
	 * @return string
	 */
	public static function problem( $dir, $create = false ) {
		if ( '' === $dir ) {
			return __( 'No spool directory is set. Define BRIDGE_AGENT_SPOOL_DIR in wp-config.php or set one under Settings > Bridge Agent.', 'bridge-agent' );
		}
		if ( ! path_is_absolute( $dir ) ) {
			/* translators: %s: a file system path. */
			return sprintf( __( 'The spool directory %s is not an absolute path.', 'bridge-agent' ), $dir );
		}
		$incoming = $dir . '/incoming';
		$error    = '';
		$ok       = self::guard(
			static function () use ( $dir, $incoming, $create ) {
				// Not created here: a typo in the path must not start a spool nobody watches.
				if ( ! is_dir( $dir ) ) {
					return false;
				}
				if ( $create && ! file_exists( $incoming ) ) {
					mkdir( $incoming, 0770 );
				}
				return is_dir( $incoming ) && is_writable( $incoming );
			},
			$error
		);
		if ( $ok ) {
			return '';
		}
		if ( ! @is_dir( $dir ) ) { // phpcs:ignore WordPress.PHP.NoSilencedErrors -- reporting, not acting.
			/* translators: %s: a file system path. */
			return sprintf( __( 'The spool directory %s does not exist or cannot be reached. Create it as the bridge-agent operations guide says.', 'bridge-agent' ), $dir );
		}
		if ( ! @is_dir( $incoming ) ) { // phpcs:ignore WordPress.PHP.NoSilencedErrors
			/* translators: 1: a file system path, 2: the PHP error. */
			return trim( sprintf( __( '%1$s is missing or is not a directory. %2$s', 'bridge-agent' ), $incoming, $error ) );
		}
		/* translators: 1: a file system path, 2: a user name. */
		return sprintf( __( '%1$s is not writable by the web server user (%2$s).', 'bridge-agent' ), $incoming, self::process_user() );
	}

	/**
	 * Writes events (spool documents) and any kept ones; records the outcome. Never throws.
	 *
	 * @param array<int, array<string, mixed>> $events Spool documents, already coalesced.
	 * @return bool Whether everything was written.
	 */
	public function write( array $events ) {
		$status = $this->status();
		$kept   = $this->kept();
		if ( ! empty( $kept ) ) {
			$events = self::coalesce( array_merge( $kept, $events ) );
		}
		if ( empty( $events ) ) {
			return true;
		}
		$dir     = self::directory();
		$error   = self::problem( $dir, true );
		$written = 0;
		$names   = array();
		if ( '' === $error ) {
			foreach ( array_chunk( $events, self::MAX_EVENTS_PER_FILE ) as $chunk ) {
				$name = $this->write_file( $dir . '/incoming', $chunk, $error );
				if ( '' === $name ) {
					break;
				}
				$names[]  = $name;
				$written += count( $chunk );
			}
		}
		if ( '' === $error ) {
			$this->succeeded( $status, end( $names ), $written, ! empty( $kept ) );
			return true;
		}
		$this->failed( $status, $error, array_slice( $events, $written ) );
		return false;
	}

	/**
	 * Writes the kept events, if any (the hourly retry and the admin's "Retry now").
	 *
	 * @return bool Whether nothing is kept any more.
	 */
	public function retry_pending() {
		return $this->write( array() );
	}

	/**
	 * The status shown in the admin, with every key present.
	 *
	 * @return array{last_written_at:int,last_file:string,last_events:int,error:string,error_at:int,error_logged_at:int,dropped:int}
	 */
	public function status() {
		$stored = get_option( self::OPTION_STATUS, array() );
		$status = array(
			'last_written_at' => 0,
			'last_file'       => '',
			'last_events'     => 0,
			'error'           => '',
			'error_at'        => 0,
			'error_logged_at' => 0,
			'dropped'         => 0,
		);
		if ( is_array( $stored ) ) {
			foreach ( $status as $key => $default ) {
				if ( isset( $stored[ $key ] ) ) {
					$status[ $key ] = is_int( $default ) ? (int) $stored[ $key ] : (string) $stored[ $key ];
				}
			}
		}
		return $status;
	}

	/**
	 * Spool files waiting in `incoming/` (the agent has not consumed them yet), counted up to $cap.
	 *
	 * @param string $dir The spool directory.
	 * @param int    $cap Stop counting here: a huge backlog must not make the admin page slow.
	 * @return int The count, or -1 when the folder cannot be read.
	 */
	public static function backlog( $dir, $cap = 10000 ) {
		if ( '' === $dir ) {
			return -1;
		}
		$error = '';
		$count = self::guard(
			static function () use ( $dir, $cap ) {
				$handle = opendir( $dir . '/incoming' );
				if ( false === $handle ) {
					return -1;
				}
				$n = 0;
				while ( $n < $cap && false !== ( $name = readdir( $handle ) ) ) { // phpcs:ignore WordPress.CodeAnalysis.AssignmentInCondition
					if ( '.' !== $name[0] && '.json' === substr( $name, -5 ) ) {
						++$n;
					}
				}
				closedir( $handle );
				return $n;
			},
			$error
		);
		return is_int( $count ) ? $count : -1;
	}

	/**
	 * The stronger of two events for the same product within one batch.
	 *
	 * A deletion wins over everything before it; anything after a deletion means the product is
	 * back (restored from the trash), which is an update; otherwise created > updated > stock.
	 *
	 * @param string $old The event recorded so far.
	 * @param string $new The event that just happened.
	 * @return string
	 */
	public static function merge( $old, $new ) {
		if ( 'product.deleted' === $new ) {
			return $new;
		}
		if ( 'product.deleted' === $old ) {
			return 'product.updated';
		}
		$rank = array_flip( self::EVENTS );
		return $rank[ $new ] > $rank[ $old ] ? $new : $old;
	}

	/**
	 * Coalesces spool documents by product id, in order of first appearance; the last `at` and
	 * the last non-empty SKU win.
	 *
	 * @param array<int, array<string, mixed>> $events Spool documents.
	 * @return array<int, array<string, mixed>>
	 */
	public static function coalesce( array $events ) {
		$by_id = array();
		foreach ( $events as $event ) {
			if ( ! is_array( $event ) || ! isset( $event['id'], $event['event'] ) || ! in_array( $event['event'], self::EVENTS, true ) ) {
				continue;
			}
			$id = (string) $event['id'];
			if ( isset( $by_id[ $id ] ) ) {
				$old            = $by_id[ $id ];
				$event['event'] = self::merge( $old['event'], $event['event'] );
				if ( empty( $event['sku'] ) && ! empty( $old['sku'] ) ) {
					$event['sku'] = $old['sku'];
				}
			}
			$by_id[ $id ] = $event;
		}
		return array_values( $by_id );
	}

	/**
	 * One spool document (format version 1).
	 *
	 * @param string $event One of EVENTS.
	 * @param string $id    The product id (a variation's parent for variation changes).
	 * @param string $sku   The product's SKU, '' when it has none.
	 * @return array<string, mixed>
	 */
	public static function document( $event, $id, $sku = '' ) {
		$doc = array(
			'v'     => self::FORMAT_VERSION,
			'event' => $event,
			'id'    => (string) $id,
		);
		if ( '' !== $sku ) {
			$doc['sku'] = $sku;
		}
		$doc['at'] = gmdate( 'Y-m-d\TH:i:s\Z' );
		return $doc;
	}

	/**
	 * Writes one file atomically; returns its name, or '' with $error set.
	 *
	 * @param string                           $incoming The `incoming/` folder.
	 * @param array<int, array<string, mixed>> $events   The documents of this file.
	 * @param string                           $error    Set to what went wrong.
	 * @return string
	 */
	private function write_file( $incoming, array $events, &$error ) {
		$doc  = 1 === count( $events ) ? $events[0] : $events;
		$json = wp_json_encode( $doc, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE );
		if ( false === $json ) {
			$error = __( 'The change events could not be encoded as JSON.', 'bridge-agent' );
			return '';
		}
		$name  = self::file_name();
		$tmp   = $incoming . '/.' . $name . '.tmp';
		$final = $incoming . '/' . $name;
		$step  = '';
		$ok    = self::guard(
			static function () use ( $tmp, $final, $json, &$step ) {
				$step   = 'open';
				$handle = fopen( $tmp, 'xb' ); // phpcs:ignore WordPress.WP.AlternativeFunctions -- WP_Filesystem cannot fsync or rename atomically.
				if ( false === $handle ) {
					return false;
				}
				$step = 'write';
				$done = fwrite( $handle, $json ) === strlen( $json ) && fflush( $handle ); // phpcs:ignore WordPress.WP.AlternativeFunctions
				// The rename below must never publish a name whose bytes are not on disk yet.
				if ( $done && function_exists( 'fsync' ) ) {
					$done = fsync( $handle );
				}
				fclose( $handle ); // phpcs:ignore WordPress.WP.AlternativeFunctions
				if ( ! $done ) {
					unlink( $tmp );
					return false;
				}
				$step = 'rename';
				if ( ! rename( $tmp, $final ) ) {
					unlink( $tmp );
					return false;
				}
				return true;
			},
			$error
		);
		if ( true === $ok ) {
			return $name;
		}
		/* translators: 1: open, write or rename, 2: a file system path, 3: the PHP error. */
		$error = trim( sprintf( __( 'Could not %1$s a spool file in %2$s. %3$s', 'bridge-agent' ), $step, $incoming, $error ) );
		return '';
	}

	/**
	 * `20261123T100000.123456-4242-9f2c1ab0.json`: sortable by time, unique across processes.
	 *
	 * @return string
	 */
	private static function file_name() {
		$now = microtime( true );
		try {
			$random = bin2hex( random_bytes( 4 ) );
		} catch ( Exception $e ) {
			$random = sprintf( '%08x', wp_rand() );
		}
		$micro = (int) round( ( $now - floor( $now ) ) * 1000000 ) % 1000000;
		return sprintf( '%s.%06d-%d-%s.json', gmdate( 'Ymd\THis', (int) $now ), $micro, getmypid(), $random );
	}

	/**
	 * Records a successful write; logs the end of a problem.
	 *
	 * @param array<string, mixed> $status The status before.
	 * @param string               $file   The last file written.
	 * @param int                  $count  Events written.
	 * @param bool                 $had_kept Whether kept events were among them.
	 */
	private function succeeded( array $status, $file, $count, $had_kept ) {
		if ( '' !== $status['error'] ) {
			self::log( 'spool files are written again to ' . self::directory() . '/incoming' );
		}
		if ( $had_kept ) {
			delete_option( self::OPTION_PENDING );
		}
		$now = time();
		// A database write costs a save more than the spool file itself (an InnoDB commit: about
		// 5 ms here, bench/wordpress_plugin.py), so a healthy spool refreshes its status at most
		// once a minute; any change of state is recorded at once.
		$changed = '' !== $status['error'] || $had_kept || $now - $status['last_written_at'] >= self::STATUS_EVERY;
		if ( ! $changed ) {
			return;
		}
		$status['last_written_at'] = $now;
		$status['last_file']       = (string) $file;
		$status['last_events']     = $count;
		$status['error']           = '';
		update_option( self::OPTION_STATUS, $status, true );
	}

	/**
	 * Records a failed write, keeps the events that were not written, logs the problem.
	 *
	 * @param array<string, mixed>             $status The status before.
	 * @param string                           $error  What went wrong.
	 * @param array<int, array<string, mixed>> $left   The events not written.
	 */
	private function failed( array $status, $error, array $left ) {
		$now = time();
		$new = ! self::same_problem( $error, $status['error'] );
		if ( $new || $now - $status['error_logged_at'] >= self::LOG_EVERY ) {
			self::log( $error . ' The changes are kept and written when the spool works again.' );
			$status['error_logged_at'] = $now;
		}
		if ( $new ) {
			$status['error_at'] = $now;
		}
		$status['error'] = $error;
		// Read the kept list again just before writing it: another request may have added to it
		// since this one started (the list is small; the window is now the two statements).
		$kept = self::coalesce( array_merge( $this->kept(), $left ) );
		$over            = count( $kept ) - self::MAX_PENDING;
		if ( $over > 0 ) {
			// Oldest first out: the poll and the reconciliation of the agent find these products.
			$kept               = array_slice( $kept, $over );
			$status['dropped'] += $over;
		}
		update_option( self::OPTION_PENDING, $kept, false );
		update_option( self::OPTION_STATUS, $status, true );
	}

	/**
	 * The events kept by earlier failed writes, read from the database itself: the options cache
	 * of this request may predate another request's failure (or its success).
	 *
	 * @return array<int, array<string, mixed>>
	 */
	public function kept() {
		global $wpdb;
		$raw  = $wpdb->get_var( $wpdb->prepare( "SELECT option_value FROM {$wpdb->options} WHERE option_name = %s", self::OPTION_PENDING ) ); // phpcs:ignore WordPress.DB.DirectDatabaseQuery
		$kept = null === $raw ? array() : maybe_unserialize( $raw );
		return is_array( $kept ) ? array_values( $kept ) : array();
	}

	/**
	 * Whether two error messages describe the same ongoing problem: PHP's messages carry changing
	 * numbers ("Write of 123 bytes failed with errno=28"), which must not make every request look
	 * like a new problem (a new log line, a new "failing since").
	 *
	 * @param string $a One message.
	 * @param string $b The other.
	 * @return bool
	 */
	public static function same_problem( $a, $b ) {
		return preg_replace( '/\d+/', '#', $a ) === preg_replace( '/\d+/', '#', $b );
	}

	/**
	 * Runs $work with PHP warnings captured instead of printed; returns its result, or false when
	 * it threw. $error receives the last warning, so the admin sees the operating system's reason.
	 *
	 * @param callable $work  The file system work.
	 * @param string   $error Set to the last PHP warning, if any.
	 * @return mixed
	 */
	private static function guard( callable $work, &$error ) {
		$error = '';
		set_error_handler( // phpcs:ignore WordPress.PHP.DevelopmentFunctions
			static function ( $errno, $message ) use ( &$error ) {
				$error = preg_replace( '/^[a-z_]+\([^)]*\): /i', '', (string) $message );
				return true;
			}
		);
		try {
			return $work();
		} catch ( Throwable $e ) {
			$error = $e->getMessage();
			return false;
		} finally {
			restore_error_handler();
		}
	}

	/**
	 * The user PHP runs as, for "not writable by ..." messages.
	 *
	 * @return string
	 */
	private static function process_user() {
		if ( function_exists( 'posix_geteuid' ) && function_exists( 'posix_getpwuid' ) ) {
			$info = posix_getpwuid( posix_geteuid() );
			if ( is_array( $info ) && isset( $info['name'] ) ) {
				return $info['name'];
			}
		}
		return (string) get_current_user();
	}

	/**
	 * One line in the PHP error log, where the server's operator looks.
	 *
	 * @param string $message What happened.
	 */
	private static function log( $message ) {
		error_log( 'bridge-agent: ' . $message ); // phpcs:ignore WordPress.PHP.DevelopmentFunctions
	}
}
