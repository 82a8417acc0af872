<?php
/**
 * JSON-LD in the product page head (platforms.md 1.12).
 *
 * The agent writes the hub's JSON-LD for a product into its `_bridge_jsonld` post meta (through
 * WooCommerce's REST `meta_data`, which stores a JSON object as a PHP array and a JSON string as a
 * string; both are accepted). On a single product page this prints it from `wp_head` as
 * `<script type="application/ld+json">`.
 *
 * Why the escaping is safe: the value is decoded and encoded again with JSON_HEX_TAG (and
 * JSON_HEX_AMP), so every "<" and ">" inside strings becomes \u003C / \u003E. No stored text can
 * then produce "</script" or "<!--", the only sequences that end or confuse a script element's
 * raw text in HTML; the JSON still means exactly the same thing. A value that is not a JSON
 * object or array is not printed at all: broken markup is worse than none.
 *
 * WooCommerce prints its own Product markup in the footer. When ours is present, its
 * `woocommerce_structured_data_product` filter returns an empty array, which WC_Structured_Data
 * drops, so the page carries one Product entity instead of two competing ones.
 *
 * @package BridgeAgent
 */

defined( 'ABSPATH' ) || exit;

/**
 * Prints the agent's JSON-LD and suppresses WooCommerce's duplicate.
 */
final class Bridge_Agent_Structured_Data {

	/** The post meta the agent writes. */
	const META_KEY = '_bridge_jsonld';

	/** Encoding that keeps the text inert inside a script element. */
	const FLAGS = JSON_HEX_TAG | JSON_HEX_AMP | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE;

	/**
	 * Encoded JSON-LD by product id for this request ('' when the product has none).
	 *
	 * @var array<int, string>
	 */
	private static $cache = array();

	/**
	 * Hooks the head output and the WooCommerce filter.
	 */
	public function register() {
		add_action( 'wp_head', array( $this, 'print_head' ), 20 );
		add_filter( 'woocommerce_structured_data_product', array( $this, 'filter_woocommerce_product' ), 100, 2 );
		// The cache must not outlive a change of the meta within one request.
		foreach ( array( 'added_post_meta', 'updated_post_meta', 'deleted_post_meta' ) as $hook ) {
			add_action( $hook, array( __CLASS__, 'forget' ), 10, 3 );
		}
	}

	/**
	 * `wp_head`: the script element on single product pages whose product has JSON-LD.
	 */
	public function print_head() {
		$json = self::on_this_page();
		if ( '' !== $json ) {
			// $json is inert inside a script element: see FLAGS and the file's docblock.
			echo '<script type="application/ld+json" class="bridge-agent-jsonld">' . $json . "</script>\n"; // phpcs:ignore WordPress.Security.EscapeOutput.OutputNotEscaped
		}
	}

	/**
	 * `woocommerce_structured_data_product`: no WooCommerce Product markup where ours is printed.
	 *
	 * @param mixed $markup  WooCommerce's markup for the product.
	 * @param mixed $product The WC_Product.
	 * @return mixed
	 */
	public function filter_woocommerce_product( $markup, $product = null ) {
		// Only the product this page prints JSON-LD for: the same markup is built for a product
		// shown elsewhere (a [product_page] shortcode on a page), where ours is not printed.
		if ( is_object( $product ) && method_exists( $product, 'get_id' ) && '' !== self::on_this_page()
			&& (int) $product->get_id() === (int) get_queried_object_id() ) {
			return array();
		}
		return $markup;
	}

	/**
	 * The JSON-LD this page prints: the product's, on its own single page, unless the product is
	 * password protected (WooCommerce prints no markup there either: it would leak the
	 * description and offers the password hides); '' otherwise.
	 *
	 * @return string
	 */
	private static function on_this_page() {
		if ( ! is_singular( 'product' ) ) {
			return '';
		}
		$product_id = (int) get_queried_object_id();
		if ( post_password_required( $product_id ) ) {
			return '';
		}
		return self::for_product( $product_id );
	}

	/**
	 * The product's JSON-LD, encoded for a script element; '' when it has none (or it is invalid).
	 *
	 * @param int $product_id Product id.
	 * @return string
	 */
	public static function for_product( $product_id ) {
		if ( $product_id <= 0 ) {
			return '';
		}
		if ( ! isset( self::$cache[ $product_id ] ) ) {
			self::$cache[ $product_id ] = self::encode( get_post_meta( $product_id, self::META_KEY, true ) );
		}
		return self::$cache[ $product_id ];
	}

	/**
	 * A stored meta value as script-safe JSON, or ''.
	 *
	 * @param mixed $value A JSON string, or the array WordPress unserialized.
	 * @return string
	 */
	public static function encode( $value ) {
		if ( is_string( $value ) ) {
			if ( '' === trim( $value ) ) {
				return '';
			}
			// Objects stay objects (stdClass), so "{}" is not turned into "[]".
			$value = json_decode( $value, false );
			if ( JSON_ERROR_NONE !== json_last_error() ) {
				return '';
			}
		}
		if ( ! is_array( $value ) && ! is_object( $value ) ) {
			return '';
		}
		if ( empty( (array) $value ) ) {
			return '';
		}
		$json = wp_json_encode( $value, self::FLAGS );
		return false === $json ? '' : $json;
	}

	/**
	 * Forgets a product's cached value when its meta changes (meta hooks).
	 *
	 * @param mixed      $meta_id Meta row id(s).
	 * @param int|string $post_id Post id.
	 * @param string     $key     Meta key.
	 */
	public static function forget( $meta_id, $post_id, $key ) {
		if ( self::META_KEY === $key ) {
			unset( self::$cache[ (int) $post_id ] );
		}
	}
}
