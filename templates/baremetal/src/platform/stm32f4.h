/*
 * STM32F4 registers the port touches: the reset and clock controller (RCC), the flash interface and
 * the GPIO ports. Their addresses and bit positions are the same on every STM32F4 part (reference
 * manuals RM0090, RM0368, RM0390). Only clock_stm32f4.c and uart_stm32f4_usart.c include this.
 */
#ifndef UTVM_BAREMETAL_STM32F4_H_
#define UTVM_BAREMETAL_STM32F4_H_

#include "platform.h"

#define STM32_RCC_BASE 0x40023800u
#define RCC_CR REG32(STM32_RCC_BASE + 0x00u)
#define RCC_PLLCFGR REG32(STM32_RCC_BASE + 0x04u)
#define RCC_CFGR REG32(STM32_RCC_BASE + 0x08u)
#define RCC_AHB1ENR REG32(STM32_RCC_BASE + 0x30u)
#define RCC_APB1ENR REG32(STM32_RCC_BASE + 0x40u)
#define RCC_APB2ENR REG32(STM32_RCC_BASE + 0x44u)

#define RCC_CR_HSION (1u << 0)
#define RCC_CR_HSIRDY (1u << 1)
#define RCC_CR_PLLON (1u << 24)
#define RCC_CR_PLLRDY (1u << 25)

/* PLLM [5:0], PLLN [14:6], PLLP [17:16], PLLSRC [22], PLLQ [27:24]; the rest is left as it is. */
#define RCC_PLLCFGR_FIELDS 0x0F437FFFu
#define RCC_CFGR_SW 0x3u
#define RCC_CFGR_SW_HSI 0x0u
#define RCC_CFGR_SW_PLL 0x2u
#define RCC_CFGR_SWS_SHIFT 2u
/* HPRE [7:4], PPRE1 [12:10], PPRE2 [15:13]: the bus prescalers. */
#define RCC_CFGR_PRESCALERS 0xFCF0u

#define FLASH_ACR REG32(0x40023C00u)
#define FLASH_ACR_LATENCY 0xFu

#define STM32_GPIO_BASE(port) (0x40020000u + 0x400u * (port)) /* port A = 0 */
#define GPIO_MODER(port) REG32(STM32_GPIO_BASE(port) + 0x00u)
#define GPIO_OSPEEDR(port) REG32(STM32_GPIO_BASE(port) + 0x08u)
#define GPIO_PUPDR(port) REG32(STM32_GPIO_BASE(port) + 0x0Cu)
#define GPIO_AFR(port, pin) REG32(STM32_GPIO_BASE(port) + 0x20u + 4u * ((pin) / 8u))

/* The APB bus clock (bus 1 or 2) that clock_init left running, for the USART's baud divider. */
uint32_t stm32_apb_hz(uint32_t bus);

#endif /* UTVM_BAREMETAL_STM32F4_H_ */
