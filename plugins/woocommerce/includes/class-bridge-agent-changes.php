<?php
/**
 * The change collector: WooCommerce and WordPress hooks -> coalesced spool events, one file per
 * request (platforms.md 1.8-1.9).
 *
 * Why both families of hooks: WooCommerce's CRUD hooks (`woocommerce_update_product`, ...) cover
 * the REST API, the admin form, imports and stock changes from orders, but the WordPress admin's
 * list actions (trash, restore, delete) and code calling wp_insert_post()/wp_delete_post()
 * directly bypass them (woocommerce#13852); the core hooks (`save_post_product`, `trashed_post`,
 * `untrashed_post`, `before_delete_post`/`deleted_post`) catch those. Stock and price meta written
 * straight with update_post_meta() by inventory tools bypass both, hence the meta hooks on a short
 * list of keys. One save fires several of these hooks; they coalesce into one event per product.
 *
 * Variations are not products of their own in the canonical model: a change to a variation is a
 * `product.updated` (or `stock.updated`) of its parent, whose re-fetch includes every variation.
 *
 * Events are written at PHP shutdown, after the request's work, in one file: a save that fires
 * ten hooks costs one small file. A long request (a CSV import, WP-CLI) flushes every
 * FLUSH_AT products so memory stays bounded and a crash late in it loses nothing written before.
 *
 * @package BridgeAgent
 */

defined( 'ABSPATH' ) || exit;

/**
 * Collects the product changes of one request and hands them to the spool at shutdown.
 */
final class Bridge_Agent_Changes {

	/** Products collected before a long request flushes early. */
	const FLUSH_AT = 1000;

	/** Post meta that changes what the agent maps, even when written outside a product save. */
	const WATCHED_META = array(
		'_stock'                  => 'stock.updated',
		'_stock_status'           => 'stock.updated',
		'_backorders'             => 'stock.updated',
		'_price'                  => 'product.updated',
		'_regular_price'          => 'product.updated',
		'_sale_price'             => 'product.updated',
		'_sku'                    => 'product.updated',
		'_thumbnail_id'           => 'product.updated',
		'_product_image_gallery'  => 'product.updated',
		'_yoast_wpseo_title'      => 'product.updated',
		'_yoast_wpseo_metadesc'   => 'product.updated',
		'rank_math_title'         => 'product.updated',
		'rank_math_description'   => 'product.updated',
		'_aioseo_title'           => 'product.updated',
		'_aioseo_description'     => 'product.updated',
		'_seopress_titles_title'  => 'product.updated',
		'_seopress_titles_desc'   => 'product.updated',
	);

	/**
	 * Post statuses that are not products yet: "Add New" opens an auto-draft (WooCommerce's
	 * editor and its "Add variation" save it before it is published), and the CSV importer
	 * creates `importing` placeholders that it fills in later.
	 */
	const NOT_YET = array( 'auto-draft', 'new', 'inherit', 'importing' );

	/**
	 * The spool writer.
	 *
	 * @var Bridge_Agent_Spool
	 */
	private $spool;

	/**
	 * Collected events by product id, in order of first appearance.
	 *
	 * @var array<string, array<string, mixed>>
	 */
	private $events = array();

	/**
	 * What a post being deleted was, taken before the delete (afterwards it is gone).
	 *
	 * @var array<int, array{0:string,1:string,2:bool}>
	 */
	private $deleting = array();

	/**
	 * Whether a flush is registered for the end of this request.
	 *
	 * @var bool
	 */
	private $flush_pending = false;

	/**
	 * Products collected before an early flush (the `bridge_agent_flush_at` filter), read once.
	 *
	 * @var int|null
	 */
	private $flush_at = null;

	/**
	 * Constructor.
	 *
	 * @param Bridge_Agent_Spool $spool Where the events go.
	 */
	public function __construct( Bridge_Agent_Spool $spool ) {
		$this->spool = $spool;
	}

	/**
	 * Hooks into WooCommerce and WordPress.
	 */
	public function register() {
		// WooCommerce CRUD (data stores): REST API, admin form, imports, orders.
		add_action( 'woocommerce_new_product', array( $this, 'on_wc_new' ), 10, 2 );
		add_action( 'woocommerce_update_product', array( $this, 'on_wc_update' ), 10, 2 );
		add_action( 'woocommerce_new_product_variation', array( $this, 'on_wc_variation' ), 10, 2 );
		add_action( 'woocommerce_update_product_variation', array( $this, 'on_wc_variation' ), 10, 2 );
		add_action( 'woocommerce_process_product_meta', array( $this, 'on_post_update' ), 10, 1 );
		add_action( 'woocommerce_product_set_stock', array( $this, 'on_wc_stock' ), 10, 1 );
		add_action( 'woocommerce_variation_set_stock', array( $this, 'on_wc_stock' ), 10, 1 );
		add_action( 'woocommerce_product_set_stock_status', array( $this, 'on_wc_stock_status' ), 10, 3 );
		add_action( 'woocommerce_variation_set_stock_status', array( $this, 'on_wc_stock_status' ), 10, 3 );
		add_action( 'woocommerce_trash_product', array( $this, 'on_wc_trash' ), 10, 1 );
		add_action( 'woocommerce_trash_product_variation', array( $this, 'on_post_trashed' ), 10, 1 );
		add_action( 'woocommerce_before_delete_product', array( $this, 'on_before_delete' ), 10, 1 );
		add_action( 'woocommerce_before_delete_product_variation', array( $this, 'on_before_delete' ), 10, 1 );
		add_action( 'woocommerce_delete_product', array( $this, 'on_wc_delete' ), 10, 1 );
		add_action( 'woocommerce_delete_product_variation', array( $this, 'on_deleted' ), 10, 1 );

		// WordPress core: the admin list's trash/restore/delete and direct wp_*_post() calls.
		add_action( 'save_post_product', array( $this, 'on_save_post' ), 10, 3 );
		add_action( 'save_post_product_variation', array( $this, 'on_save_post' ), 10, 3 );
		add_action( 'transition_post_status', array( $this, 'on_transition' ), 10, 3 );
		add_action( 'trashed_post', array( $this, 'on_post_trashed' ), 10, 1 );
		add_action( 'untrashed_post', array( $this, 'on_post_update' ), 10, 1 );
		add_action( 'before_delete_post', array( $this, 'on_before_delete' ), 10, 1 );
		add_action( 'deleted_post', array( $this, 'on_deleted' ), 10, 1 );

		// Stock, price and SEO meta written without a product save.
		add_action( 'added_post_meta', array( $this, 'on_meta' ), 10, 3 );
		add_action( 'updated_post_meta', array( $this, 'on_meta' ), 10, 3 );
		add_action( 'deleted_post_meta', array( $this, 'on_meta' ), 10, 3 );

		// Late, so that changes made by other plugins' shutdown callbacks are in the file too.
		add_action( 'shutdown', array( $this, 'flush' ), 1000 );
	}

	/**
	 * `woocommerce_new_product` ($id, $product).
	 *
	 * @param int|string $id      Product id.
	 * @param mixed      $product WC_Product (or anything with get_sku()).
	 */
	public function on_wc_new( $id, $product = null ) {
		$this->record( 'product.created', $id, self::sku_of( $product, $id ) );
	}

	/**
	 * `woocommerce_update_product` ($id, $product).
	 *
	 * @param int|string $id      Product id.
	 * @param mixed      $product WC_Product.
	 */
	public function on_wc_update( $id, $product = null ) {
		$this->record( 'product.updated', $id, self::sku_of( $product, $id ) );
	}

	/**
	 * `woocommerce_{new,update}_product_variation` ($id, $variation): the parent changed.
	 *
	 * @param int|string $id        Variation id.
	 * @param mixed      $variation WC_Product_Variation.
	 */
	public function on_wc_variation( $id, $variation = null ) {
		$parent = self::parent_of( $variation, $id );
		if ( $parent > 0 ) {
			$this->record( 'product.updated', $parent, self::sku_of( null, $parent ) );
		}
	}

	/**
	 * `woocommerce_{product,variation}_set_stock` ($product).
	 *
	 * @param mixed $product WC_Product or WC_Product_Variation.
	 */
	public function on_wc_stock( $product ) {
		if ( is_object( $product ) && method_exists( $product, 'get_id' ) ) {
			$this->record_object( 'stock.updated', $product->get_id(), $product );
		}
	}

	/**
	 * `woocommerce_{product,variation}_set_stock_status` ($id, $status, $product).
	 *
	 * @param int|string $id      Product or variation id.
	 * @param string     $status  The new stock status.
	 * @param mixed      $product WC_Product or WC_Product_Variation.
	 */
	public function on_wc_stock_status( $id, $status = '', $product = null ) {
		$this->record_object( 'stock.updated', $id, $product );
	}

	/**
	 * `woocommerce_trash_product` ($id): WooCommerce's own `product.deleted` topic means this.
	 *
	 * @param int|string $id Product id.
	 */
	public function on_wc_trash( $id ) {
		$this->record( 'product.deleted', $id, self::sku_of( null, $id ) );
	}

	/**
	 * `woocommerce_delete_product` ($id), after the product is gone.
	 *
	 * @param int|string $id Product id.
	 */
	public function on_wc_delete( $id ) {
		$id = (int) $id;
		$sku = isset( $this->deleting[ $id ] ) ? $this->deleting[ $id ][1] : '';
		$this->record( 'product.deleted', $id, $sku );
	}

	/**
	 * `save_post_product` / `save_post_product_variation` ($post_id, $post, $update).
	 *
	 * @param int|string $post_id Post id.
	 * @param mixed      $post    WP_Post.
	 * @param bool       $update  False when the post was just inserted.
	 */
	public function on_save_post( $post_id, $post = null, $update = true ) {
		if ( ! $post instanceof WP_Post ) {
			$post = get_post( (int) $post_id );
		}
		if ( ! $post instanceof WP_Post || in_array( $post->post_status, self::NOT_YET, true ) ) {
			return;
		}
		$ref = self::ref( (int) $post_id );
		if ( null === $ref ) {
			return;
		}
		list( $product, $sku, $variation ) = $ref;
		$this->record( $update || $variation ? 'product.updated' : 'product.created', $product, $sku );
	}

	/**
	 * `transition_post_status` ($new, $old, $post): leaving the auto-draft is the creation.
	 *
	 * @param string $new  New status.
	 * @param string $old  Old status.
	 * @param mixed  $post WP_Post.
	 */
	public function on_transition( $new, $old, $post ) {
		if ( ! $post instanceof WP_Post || 'product' !== $post->post_type ) {
			return;
		}
		if ( in_array( $old, self::NOT_YET, true ) && ! in_array( $new, self::NOT_YET, true ) ) {
			$this->record( 'product.created', $post->ID, self::sku_of( null, $post->ID ) );
		}
	}

	/**
	 * `trashed_post` / `woocommerce_trash_product_variation` ($post_id).
	 *
	 * @param int|string $post_id Post id.
	 */
	public function on_post_trashed( $post_id ) {
		$ref = self::ref( (int) $post_id );
		if ( null !== $ref ) {
			list( $product, $sku, $variation ) = $ref;
			$this->record( $variation ? 'product.updated' : 'product.deleted', $product, $sku );
		}
	}

	/**
	 * `untrashed_post`, `woocommerce_process_product_meta` ($post_id).
	 *
	 * @param int|string $post_id Post id.
	 */
	public function on_post_update( $post_id ) {
		$ref = self::ref( (int) $post_id );
		if ( null !== $ref ) {
			$this->record( 'product.updated', $ref[0], $ref[1] );
		}
	}

	/**
	 * `before_delete_post` / `woocommerce_before_delete_product[_variation]` ($post_id): remember
	 * what the post is, because after the delete its type, parent and SKU are gone.
	 *
	 * @param int|string $post_id Post id.
	 */
	public function on_before_delete( $post_id ) {
		$post_id = (int) $post_id;
		if ( ! isset( $this->deleting[ $post_id ] ) ) {
			$ref = self::ref( $post_id );
			if ( null !== $ref ) {
				$this->deleting[ $post_id ] = $ref;
			}
		}
	}

	/**
	 * `deleted_post` / `woocommerce_delete_product_variation` ($post_id), after the delete.
	 *
	 * @param int|string $post_id Post id.
	 */
	public function on_deleted( $post_id ) {
		$post_id = (int) $post_id;
		if ( ! isset( $this->deleting[ $post_id ] ) ) {
			return; // Not a product, or its before-hook never ran: nothing known to report.
		}
		list( $product, $sku, $variation ) = $this->deleting[ $post_id ];
		unset( $this->deleting[ $post_id ] );
		$this->record( $variation ? 'product.updated' : 'product.deleted', $product, $sku );
	}

	/**
	 * `added_post_meta` / `updated_post_meta` / `deleted_post_meta` ($meta_id, $post_id, $key).
	 *
	 * @param mixed      $meta_id Meta row id(s).
	 * @param int|string $post_id Post id.
	 * @param string     $key     Meta key.
	 */
	public function on_meta( $meta_id, $post_id, $key ) {
		if ( ! is_string( $key ) || ! isset( self::WATCHED_META[ $key ] ) ) {
			return;
		}
		$ref = self::ref( (int) $post_id );
		if ( null !== $ref ) {
			$this->record( self::WATCHED_META[ $key ], $ref[0], $ref[1] );
		}
	}

	/**
	 * Collects one event; flushes early when a long request has collected many products.
	 *
	 * @param string     $event One of Bridge_Agent_Spool::EVENTS.
	 * @param int|string $id    Product id.
	 * @param string     $sku   SKU, '' when unknown.
	 */
	public function record( $event, $id, $sku = '' ) {
		$id = (string) $id;
		if ( '' === $id || '0' === $id ) {
			return;
		}
		// WooCommerce's hooks fire for auto-drafts too; a product that does not exist (any more)
		// has no status and is reported (a deletion, or a product only WooCommerce's tables know).
		if ( in_array( get_post_status( (int) $id ), self::NOT_YET, true ) ) {
			return;
		}
		if ( isset( $this->events[ $id ] ) ) {
			$old = $this->events[ $id ];
			// After a delete the SKU meta is gone: keep the one seen before.
			if ( '' === $sku && isset( $old['sku'] ) ) {
				$sku = $old['sku'];
			}
			$event = Bridge_Agent_Spool::merge( $old['event'], $event );
		}
		$this->events[ $id ] = Bridge_Agent_Spool::document( $event, $id, $sku );
		if ( ! $this->flush_pending && did_action( 'shutdown' ) ) {
			// Changed by a shutdown callback that ran after ours: write those too.
			$this->flush_pending = true;
			register_shutdown_function( array( $this, 'flush' ) );
		}
		if ( null === $this->flush_at ) {
			/**
			 * Filters how many products a long request collects before it writes a spool file
			 * early (the rest still goes at shutdown).
			 *
			 * @param int $flush_at Products; default 1000.
			 */
			$this->flush_at = max( 1, (int) apply_filters( 'bridge_agent_flush_at', self::FLUSH_AT ) );
		}
		if ( count( $this->events ) >= $this->flush_at ) {
			$this->flush();
		}
	}

	/**
	 * Writes the collected events as one spool file (the `shutdown` action). Never throws.
	 */
	public function flush() {
		// $this->deleting stays: an early flush can fall between a before- and an after-delete hook.
		$this->flush_pending = false;
		if ( empty( $this->events ) ) {
			return;
		}
		$events       = array_values( $this->events );
		$this->events = array();
		try {
			$this->spool->write( $events );
		} catch ( Throwable $e ) {
			// The spool already turns file system errors into a status; this is a last resort
			// (a database error while saving the status, say) so that the page never breaks.
			error_log( 'bridge-agent: could not record product changes: ' . $e->getMessage() ); // phpcs:ignore WordPress.PHP.DevelopmentFunctions
		}
	}

	/**
	 * Records an event for a WooCommerce object that may be a variation.
	 *
	 * @param string     $event   The event for a product (a variation's parent gets it too).
	 * @param int|string $id      Product or variation id.
	 * @param mixed      $product WC_Product, WC_Product_Variation or null.
	 */
	private function record_object( $event, $id, $product ) {
		$parent = self::parent_of( $product, $id );
		if ( $parent > 0 ) {
			$this->record( $event, $parent, self::sku_of( null, $parent ) );
		} else {
			$this->record( $event, $id, self::sku_of( $product, $id ) );
		}
	}

	/**
	 * For a product or variation post: [product id, product SKU, is a variation]; else null.
	 *
	 * @param int $post_id Post id.
	 * @return array{0:string,1:string,2:bool}|null
	 */
	private static function ref( $post_id ) {
		if ( $post_id <= 0 ) {
			return null;
		}
		$type = get_post_type( $post_id );
		if ( 'product' === $type ) {
			$product   = $post_id;
			$variation = false;
		} elseif ( 'product_variation' === $type ) {
			$product   = (int) wp_get_post_parent_id( $post_id );
			$variation = true;
		} else {
			return null;
		}
		// An auto-draft is not a product yet (WordPress deletes old ones by itself, too).
		if ( $product <= 0 || in_array( get_post_status( $product ), self::NOT_YET, true ) ) {
			return null;
		}
		return array( (string) $product, self::sku_of( null, $product ), $variation );
	}

	/**
	 * The parent product of a variation, or 0 for a product.
	 *
	 * @param mixed      $product A WooCommerce product object or null.
	 * @param int|string $id      Its id.
	 * @return int
	 */
	private static function parent_of( $product, $id ) {
		if ( is_object( $product ) && method_exists( $product, 'get_parent_id' ) ) {
			return (int) $product->get_parent_id();
		}
		return 'product_variation' === get_post_type( (int) $id ) ? (int) wp_get_post_parent_id( (int) $id ) : 0;
	}

	/**
	 * A product's SKU from its object, else from its post meta; '' when it has none.
	 *
	 * @param mixed      $product A WooCommerce product object or null.
	 * @param int|string $id      Its id.
	 * @return string
	 */
	private static function sku_of( $product, $id ) {
		if ( is_object( $product ) && method_exists( $product, 'get_sku' ) ) {
			return (string) $product->get_sku();
		}
		$sku = get_post_meta( (int) $id, '_sku', true );
		return is_scalar( $sku ) ? (string) $sku : '';
	}
}
