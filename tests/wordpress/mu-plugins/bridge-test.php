<?php
/**
 * Test-only must-use plugin: the parts of WooCommerce the companion plugin relies on, because
 * WooCommerce itself is not in our package sources.
 *
 * - the `product` and `product_variation` post types, registered as WooCommerce registers them
 *   (public products, non-public variations whose parent is the product);
 * - Bridge_Test_Product, a stand-in for WC_Product with the methods the plugin calls;
 * - WC_Structured_Data in miniature: on single product pages WooCommerce builds its Product markup,
 *   passes it through the `woocommerce_structured_data_product` filter, keeps it only when it still
 *   has a valid `@type` (WC_Structured_Data::set_data), and prints it in the footer as
 *   {"@context":"https://schema.org/","@graph":[...]}.
 *
 * @package BridgeAgentTests
 */

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

add_action(
	'wp_footer',
	static function () {
		if ( ! is_singular( 'product' ) ) {
			return;
		}
		$post    = get_queried_object();
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
			return;
		}
		$data = array(
			'@context' => 'https://schema.org/',
			'@graph'   => array( $markup ),
		);
		echo '<script type="application/ld+json" class="woocommerce-stand-in">' . wp_json_encode( $data ) . '</script>';
	}
);
