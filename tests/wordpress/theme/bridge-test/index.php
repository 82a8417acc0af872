<?php
/**
 * Test-only theme template: a head with wp_head(), the post, a footer with wp_footer().
 *
 * @package BridgeAgentTests
 */

?><!DOCTYPE html>
<html <?php language_attributes(); ?>>
<head>
<meta charset="<?php bloginfo( 'charset' ); ?>">
<?php wp_head(); ?>
</head>
<body <?php body_class(); ?>>
<main>
<?php
while ( have_posts() ) {
	the_post();
	echo '<h1 class="product-title">' . esc_html( get_the_title() ) . '</h1>';
	the_content();
}
?>
</main>
<?php wp_footer(); ?>
</body>
</html>
