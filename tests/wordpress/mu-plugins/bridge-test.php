<?php
/**
 * Test-only must-use plugin: the parts of WooCommerce the companion plugin relies on, because
 * WooCommerce itself is not in our package sources.
 *
 * - the `product` and `product_variation` post types, registered as WooCommerce registers them
 *   (public products, non-public variations whose parent is the product);
 * - Bridge_Test_Product, a stand-in for WC_Product with the methods the plugin calls;
 * - no update checks against WordPress.org (the site is offline);
 * - WC_Structured_Data in miniature: on single product pages WooCommerce builds its Product markup,
 *   passes it through the `woocommerce_structured_data_product` filter, keeps it only when it still
 *   has a valid `@type` (WC_Structured_Data::set_data), and prints it in the footer as
 *   {"@context":"https://schema.org/","@graph":[...]}.
 *
 * @package BridgeAgentTests
 */

// The test site is offline: no update checks against WordPress.org from admin pages. They fail
// with "An unexpected error occurred..." warnings (every 12 hours of transient age), which have
// nothing to do with the plugin and would trip the tests' no-warning checks.
add_action(
	'admin_init',
	static function () {
		remove_action( 'admin_init', '_maybe_update_core' );
		remove_action( 'admin_init', '_maybe_update_plugins' );
		remove_action( 'admin_init', '_maybe_update_themes' );
	},
	0
);

add_action(
	'init',
	static function () {
		register_post_type(
			'product',
			array(
				'public'       => true,
				'label'        => 'Products',
				'show_in_rest' => true,
				'supports'     => array( 'title', 'editor', 'custom-fields' ),
			)
		);
		register_post_type(
			'product_variation',
			array(
				'public'   => false,
				'label'    => 'Variations',
				'supports' => array( 'title', 'custom-fields' ),
			)
		);
	},
	0
);

/**
 * A stand-in for WC_Product / WC_Product_Variation.
 */
class Bridge_Test_Product {
	/** @var int */
	private $id;
	/** @var string */
	private $sku;
	/** @var int */
	private $parent;

	public function __construct( $id, $sku = '', $parent = 0 ) {
		$this->id     = (int) $id;
		$this->sku    = (string) $sku;
		$this->parent = (int) $parent;
	}

	public function get_id() {
		return $this->id;
	}

	public function get_sku() {
		return $this->sku;
	}

	public function get_parent_id() {
		return $this->parent;
	}
}

/**
 * WooCommerce's Product markup for one product (WC_Structured_Data::generate_product_data and
 * output_structured_data in miniature), or '' when the filter left no valid `@type`.
 *
 * @param WP_Post $post The product.
 * @return string
 */
function bridge_test_wc_markup( $post ) {
	$sku     = (string) get_post_meta( $post->ID, '_sku', true );
	$product = new Bridge_Test_Product( $post->ID, $sku );
	$markup  = array(
		'@type'  => 'Product',
		'@id'    => get_permalink( $post ) . '#product',
		'name'   => get_the_title( $post ),
		'sku'    => '' !== $sku ? $sku : (string) $post->ID,
		'offers' => array(
			array(
				'@type'         => 'Offer',
				'price'         => '10.00',
				'priceCurrency' => 'EUR',
				'availability'  => 'https://schema.org/InStock',
			),
		),
	);
	$markup  = apply_filters( 'woocommerce_structured_data_product', $markup, $product );
	if ( ! isset( $markup['@type'] ) || ! preg_match( '|^[a-zA-Z]{1,20}$|', $markup['@type'] ) ) {
		return '';
	}
	$data = array(
		'@context' => 'https://schema.org/',
		'@graph'   => array( $markup ),
	);
	return '<script type="application/ld+json" class="woocommerce-stand-in">' . wp_json_encode( $data ) . '</script>';
}

// Single product pages: WooCommerce's template builds the markup unless the product is password
// protected (content-single-product.php returns before the summary), and prints it in the footer.
add_action(
	'wp_footer',
	static function () {
		if ( is_singular( 'product' ) && ! post_password_required() ) {
			echo bridge_test_wc_markup( get_queried_object() ); // phpcs:ignore WordPress.Security.EscapeOutput
		}
	}
);

// [bridge_test_product id="N"]: a product shown on another page, as WooCommerce's
// [product_page] shortcode does, which builds the same markup through the same filter.
add_shortcode(
	'bridge_test_product',
	static function ( $atts ) {
		$post = get_post( (int) $atts['id'] );
		return $post ? bridge_test_wc_markup( $post ) : '';
	}
);
